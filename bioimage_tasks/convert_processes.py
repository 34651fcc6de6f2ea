"""The small files of a `convert` run on threads (`job_type="local"`), each converted whole in a
worker process of its own.

A small file's conversion is mostly Python: opening it, creating the group and its level arrays,
the lease, the records and the metadata, several milliseconds a file around a batch of about the
same length. Threads converting small files side by side take the GIL in turn, and each hand-over
makes the others wait: two workers converted a folder of 32x256x256 stacks no faster than one
(benchmarks/README, "Many small files"). A process has a GIL of its own, so `num_workers`
processes, each converting one file at a time on one thread, keep the cores busy. Files larger
than SMALL_FILE_BYTES on disk still run in the calling process, their batches on all the
workers. The memory budget stays per worker: a process is one worker.

Processes are forked when this process runs no other thread (numpy's BLAS pool aside, which
forks safely), as the `bioimage-tasks convert` command does: they start at once with the modules
already imported. Otherwise (a notebook, a
test session, tensorstore's thread pool already started) a fork could copy a lock that another
thread holds, so a forkserver starts them instead, importing bioimage_tasks once (about a
second). On Linux a worker is killed when the calling process dies (`PR_SET_PDEATHSIG`), so a
killed run leaves no conversion behind that a rerun would race; its lease expires as any
killed run's does, and the rerun resumes it."""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from bioimage_tasks.backends import Executor
from bioimage_tasks.convert_job import FileJob, failure_reason
from bioimage_tasks.convert_report import FileOutcome

SMALL_FILE_BYTES = 2**26  # on disk: one batch on one worker converts it in well under a second
PR_SET_PDEATHSIG = 1
_worker_job: FileJob | None = None  # the job of this worker process
_worker_executor: Executor | None = None  # its one-thread backend, from its first file


def small_inputs(inputs: dict[str, str], processes: int) -> dict[str, str]:
    """The inputs of at most SMALL_FILE_BYTES that `processes` worker processes convert: none
    for fewer than two processes or two such files (a process would only add its start)."""
    if processes < 2:
        return {}
    small = {n: p for n, p in inputs.items() if _size(p) <= SMALL_FILE_BYTES}
    return small if len(small) > 1 else {}


def _size(path: str) -> float:
    """Bytes of `path` on disk (infinite when it cannot be read: its own run reports why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return math.inf


def convert_in_processes(
    job: FileJob,
    items: Iterable[tuple[str, str]],
    processes: int,
    done: Callable[[FileOutcome], FileOutcome],
) -> list[FileOutcome]:
    """`job.outcome(name, path)` of every item (a FileJob's), in `processes` worker processes, each
    with a one-thread backend; `done(outcome)` in this process as each ends. A file whose worker
    died (killed, out of memory) is reported failed; a rerun resumes it."""
    items = list(items)
    if not items:
        return []
    worker_job = replace(
        job, run_pyramid=pyramid_in_worker, pyramid_kwargs=job.pyramid_kwargs | {"num_workers": 1}
    )
    pool = ProcessPoolExecutor(
        min(processes, len(items)), start_context(), _start_worker, (worker_job,)
    )
    try:
        futures = {pool.submit(_convert, name, path): (name, path) for name, path in items}
        outcomes = [done(_outcome(f, *futures[f], job)) for f in as_completed(futures)]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # workers end with their current file
        raise
    pool.shutdown()
    return outcomes


def start_context() -> multiprocessing.context.BaseContext:
    """Fork where this process runs no other thread (Linux), else a forkserver (or spawn)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and sys.platform.startswith("linux") and single_threaded():
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def single_threaded() -> bool:
    """Whether the only threads are the main one and numpy's BLAS pool (named like the process):
    no Python thread, no tensorstore pool, nothing a fork would copy mid-lock."""
    if threading.active_count() > 1:
        return False
    try:
        tasks = os.listdir("/proc/self/task")
        names = {_thread_name(task) for task in tasks}
    except OSError:
        return False
    return names <= {_thread_name(str(os.getpid()))}


def _thread_name(task: str) -> str:
    with open(f"/proc/self/task/{task}/comm") as file:
        return file.read().strip()


def pyramid_in_worker(input: Any, output_group: str, **kwargs: Any) -> Any:
    """`bioimage_tasks.pyramid` on this worker process's one-thread backend."""
    global _worker_executor
    from bioimage_tasks.convert import pyramid_on  # convert imports this module

    if _worker_executor is None:
        _worker_executor = Executor("local", 1)
    return pyramid_on(_worker_executor)(input, output_group, **kwargs)


def _start_worker(job: FileJob) -> None:
    """A worker's start: its job, and death with the calling process. Ctrl-C is the calling
    process's to handle: it cancels the files not started, and a worker ends its current file
    (a small one: well under a second) rather than stopping at any point of its bookkeeping."""
    global _worker_job
    _worker_job = job
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.set_wakeup_fd(-1)  # a forked worker's signals are not news for the caller's loop


def _convert(name: str, path: str) -> FileOutcome:
    return _worker_job.outcome(name, path, False)


def _outcome(future: Future, name: str, path: str, job: FileJob) -> FileOutcome:
    """The worker's outcome, or a failed one when the worker died with the file unfinished."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - reported like a failed file
        reason = f"{failure_reason(error)}; rerun to resume"
        return FileOutcome(name, path, job.output(name), "failed", reason=reason)
