"""I/O throttling: cap how many blocks write at once across every worker of every run, with a
Prefect global concurrency limit (`prefect gcl create NAME --limit N`) named in
`RunnerConfig(write_limit=NAME)`, because a shared file system slows to a crawl under too many
concurrent writers.

`ThrottledSink` wraps a sink: each block's write takes one slot of the limit for as long as the
write lasts. The wait for a slot and the write run in a writer thread, so `start_write` returns
at once and the batch goes on reading and computing its next block while the previous one waits
(a task then holds at most its pipeline's blocks in memory, as without a limit); other tasks
are never blocked by one that waits."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.wrapped import WrappedSink

WRITER_THREADS = 32  # per process; a batch has at most a couple of writes in flight

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _writers() -> ThreadPoolExecutor:
    """This process's writer threads (created on first use, also inside Dask workers)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=WRITER_THREADS, thread_name_prefix="bioimage-tasks-write"
            )
        return _executor


@dataclass(frozen=True, eq=False)
class ThrottledSink(WrappedSink):
    """`inner` (a sink of bioimage_tasks.io), with every write holding a slot of the Prefect global
    concurrency limit `limit`. Everything else is the inner sink's."""

    limit: str

    def start_write(self, key: tuple[slice, ...], values: np.ndarray) -> Callable[[], None]:
        """Queue the write of `values` at `key` behind a slot of the limit; the returned function
        waits until it is written (raising its error). Prefect's context (API URL, run) goes
        along to the writer thread."""
        future = _writers().submit(contextvars.copy_context().run, self._write_in_slot, key, values)
        return future.result

    def _write_in_slot(self, key: tuple[slice, ...], values: np.ndarray) -> None:
        from prefect.concurrency.sync import concurrency

        with concurrency(self.limit, occupy=1, strict=True):
            self.inner.start_write(key, values)()


def throttle_writes(sink: Any, limit: str | None) -> Any:
    """`sink` whose writes hold a slot of the global concurrency limit `limit`, or `sink` itself
    when `limit` is None. The limit must exist (a missing one would silently cap nothing), so a
    run fails here, before any block is written, naming the command that creates it."""
    if limit is None:
        return sink
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(limit)
        except ObjectNotFound:
            raise ParameterError(
                f"job_config.write_limit={limit!r}: no Prefect global concurrency limit of that "
                "name; create it "
                f"with `prefect gcl create {limit} --limit N` (N = blocks allowed to write at once)"
            ) from None
    return ThrottledSink(sink, limit)
