"""Backends started: where batches execute for a checked `job_type` (runners.py). Threads run in
the calling process; every other backend is a Dask cluster (a local one, SLURM jobs through
dask-jobqueue, or an existing scheduler), so the same batch function and kernels run
everywhere. No Prefect here: the Prefect edge maps its tasks onto the same clusters."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_threads
from typing import Any

from bioimage_tasks.blockwise import run_stoppable
from bioimage_tasks.errors import BioimageTasksError
from bioimage_tasks.runners import RunnerConfig


class Executor:
    """Runs functions on a backend's workers: `submit(fn, *args)` returns a future, `wait` the
    futures done so far. Threads (`client` None) or a Dask `distributed.Client`."""

    def __init__(self, job_type: str, num_workers: int, client: Any = None):
        self.job_type, self.num_workers, self.client = job_type, num_workers, client
        self.threads = ThreadPoolExecutor(num_workers, "bioimage-tasks") if client is None else None
        self.stop = (
            threading.Event()
        )  # set on an interrupt: threads' batches end before their next block

    @property
    def address(self) -> str | None:
        """The Dask scheduler's address (None on threads)."""
        return None if self.client is None else self.client.scheduler.address

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.threads is not None:
            return self.threads.submit(run_stoppable, self.stop, fn, *args)
        return self.client.submit(fn, *args, pure=False)

    def wait(self, futures: list[Any], timeout: float) -> tuple[list[Any], list[Any]]:
        """(done, not done) of `futures`, returning when one is done or after `timeout` s."""
        if self.threads is not None:
            done, pending = wait_threads(futures, timeout, FIRST_COMPLETED)
        else:
            from distributed import wait as wait_dask

            try:
                done, pending = wait_dask(futures, timeout, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done, pending = set(), set(futures)
        return [f for f in futures if f in done], [f for f in futures if f in pending]

    def outcome(self, future: Any) -> Any:
        """A done future's result, or the exception it raised."""
        try:
            return future.result()
        except BaseException as error:  # noqa: BLE001 - handed to the runner as the outcome
            return error

    def cancel(self, futures: list[Any]) -> None:
        for future in futures:
            future.cancel()

    def close(self, interrupted: bool = False) -> None:
        """Stop the threads: at once after an error or interrupt (running batches end before their
        next block and record what they finished), else once their work is done."""
        if self.threads is not None:
            if interrupted:
                self.stop.set()
            self.threads.shutdown(wait=True, cancel_futures=True)


def _cluster(
    job_type: str, num_workers: int, config: RunnerConfig, slurm_kwargs: dict | None
) -> Any:
    """The Dask cluster of a checked backend (None for an existing scheduler)."""
    if job_type == "subprocess":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=num_workers,
            threads_per_worker=config.threads_per_worker,
            processes=True,
            memory_limit=config.memory_limit,
            dashboard_address=":0",
        )
    if job_type == "slurm":
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(**slurm_kwargs)
        cluster.adapt(minimum_jobs=min(config.min_jobs, num_workers), maximum_jobs=num_workers)
        return cluster
    return None


@contextlib.contextmanager
def backend(job_type: str, num_workers: int, config: RunnerConfig) -> Iterator[Executor]:
    """Start the backend's workers and stop them (cancelling SLURM jobs) however the block ends:
    normally, on an error, on Ctrl-C or on SIGTERM."""
    if job_type == "local":
        executor = Executor(job_type, num_workers)
        try:
            yield executor
        except BaseException:
            executor.close(interrupted=True)
            raise
        executor.close()
        return
    for name in [
        "distributed",
        *logging.root.manager.loggerDict,
    ]:  # cluster chatter is not progress
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from distributed import Client

    slurm_kwargs = (
        config.cluster_kwargs() if job_type == "slurm" else None
    )  # a unique job name each call
    with (
        jobs_cancelled_on_exit(slurm_kwargs and slurm_kwargs["job_name"]),
        cluster_tracked(job_type) as shutting_down,
        sigterm_raises(),
    ):
        cluster = _cluster(job_type, num_workers, config, slurm_kwargs)
        try:
            with Client(cluster if cluster is not None else config.address) as client:
                try:
                    yield Executor(job_type, num_workers, client)
                finally:
                    shutting_down()  # the client's and the cluster's exits, next, shut it down
        finally:
            if cluster is not None:
                cluster.close()


_clusters = {"open": 0, "shutting down": 0}  # the Dask clusters of this process's runs


@contextlib.contextmanager
def cluster_tracked(job_type: str) -> Iterator[Callable[[], None]]:
    """Count a Dask backend as open until the block ends, and as shutting down once the function
    it yields is called (see clusters_open)."""
    shutting_down = False

    def begin_shutdown() -> None:
        nonlocal shutting_down
        if not shutting_down and job_type != "local":
            shutting_down = True
            _clusters["shutting down"] += 1

    if job_type == "local":
        yield begin_shutdown
        return
    _clusters["open"] += 1
    try:
        yield begin_shutdown
    finally:
        _clusters["open"] -= 1
        if shutting_down:
            _clusters["shutting down"] -= 1


def clusters_open() -> tuple[int, int]:
    """(open, of which shutting down): the Dask clusters (local worker processes, SLURM jobs, a
    remote scheduler's client) of the runs in this process. The CLI, interrupted, waits for a
    shutdown in progress, and interrupts its main thread again to get the others shut down."""
    return _clusters["open"], _clusters["shutting down"]


# Waits until its stdin closes, which happens when the flow process ends in any way (SIGKILL and
# the OOM killer included), then cancels the run's jobs by their unique name.
_JOB_REAPER = (
    "import subprocess, sys\n"
    "sys.stdin.buffer.read()\n"
    "subprocess.run(['scancel', '--name', sys.argv[1], '--user', sys.argv[2]], "
    "capture_output=True)\n"
)


@contextlib.contextmanager
def jobs_cancelled_on_exit(job_name: str | None) -> Iterator[None]:
    """Cancel the SLURM jobs named `job_name` once this block ends or this process dies.
    dask-jobqueue cancels its jobs only from this process's normal exit path; a flow that is
    SIGKILLed (or OOM-killed, or whose cleanup misses a job) would leave them running until each
    worker's death timeout, and jobs still pending would start later and idle just as long. A small
    watcher process holds the read end of a pipe only this process writes to: when this process is
    gone, the kernel closes the pipe and the watcher runs `scancel --name`."""
    if job_name is None:
        yield
        return
    read_end, write_end = (
        os.pipe()
    )  # both non-inheritable: sbatch and other children never hold them
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-c", _JOB_REAPER, job_name, getpass.getuser()],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)
        with contextlib.suppress(subprocess.TimeoutExpired):
            watcher.wait(timeout=30)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while the backend runs, so clusters and SLURM jobs are shut
    down by the normal exit path instead of being left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class NoWorkersError(BioimageTasksError, RuntimeError):
    """Raised when a Dask backend has had no worker for longer than `job_config.worker_timeout`
    (workers killed, SLURM jobs not starting); finished blocks are kept, a rerun resumes."""


def worker_watchdog(client: Any, timeout: float) -> Callable[[], None]:
    """A check to call while waiting on a backend: raises NoWorkersError once a Dask `client`
    has had no connected worker for `timeout` seconds; does nothing for threads (None)."""
    if client is None:
        return lambda: None
    missing_since: float | None = None

    def check() -> None:
        nonlocal missing_since
        if client.scheduler_info(n_workers=-1).get("workers"):
            missing_since = None
            return
        missing_since = missing_since or time.monotonic()
        if time.monotonic() - missing_since > timeout:
            raise NoWorkersError(
                f"no Dask worker for {timeout:.0f} s (workers killed, or jobs not starting); "
                "finished blocks are kept: re-run the same call to resume"
            )

    return check
