"""The plain edge: batches run on the backend's threads or Dask workers, progress goes to the
`bioimage_tasks` logger (every 10 %) and to an in-process listener (the command line's bar), and
the summary to the log. No Prefect: what a notebook, a plugin or a pipeline calls."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bioimage_tasks.backends import Executor, worker_watchdog
from bioimage_tasks.engine import Batch, Counts, Stage, run_batch

WATCH_INTERVAL = 2.0  # seconds between worker checks while batches run

logger = logging.getLogger("bioimage_tasks")

# Set by in-process callers (the CLI) to follow progress: called with (blocks done, blocks total).
progress_listener: contextvars.ContextVar[Callable[[int, int], None] | None] = (
    contextvars.ContextVar("progress_listener", default=None)
)


class LogProgress:
    """Blocks done of a stage's total: a log line every 10 %, and the listener on every change."""

    def __init__(self, label: str, total: int, already: int, log: Callable[..., None]):
        self.label, self.total, self.done, self.log = label, total, already, log
        self.logged_tenths = already * 10 // max(total, 1)
        self.listener = progress_listener.get()
        self._notify()

    def advance(self, blocks: int) -> None:
        self.done += blocks
        tenths = self.done * 10 // max(self.total, 1)
        if tenths > self.logged_tenths:
            self.logged_tenths = tenths
            self.log(
                "%s: %d of %d blocks done (%d %%)",
                self.label,
                self.done,
                self.total,
                100 * self.done // max(self.total, 1),
            )
        self._notify()

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self.done, self.total)


def run_on(
    executor: Executor,
    worker_timeout: float,
    calls: Sequence[tuple[Any, ...]],
    fn: Callable[..., Any],
) -> Iterator[tuple[int, Any]]:
    """Run `fn(*args)` for each `args` of `calls` on `executor`; yield (index in `calls`, result
    or raised error) as each finishes. Ctrl-C cancels what has not started."""
    futures = [executor.submit(fn, *args) for args in calls]
    index = {id(future): i for i, future in enumerate(futures)}
    check_workers = worker_watchdog(executor.client, worker_timeout)
    pending = futures
    try:
        while pending:
            done, pending = executor.wait(pending, WATCH_INTERVAL)
            for future in done:
                yield index[id(future)], executor.outcome(future)
            if pending:
                check_workers()
    finally:
        executor.cancel(pending)


class PlainEdge:
    """Batches on `executor`, reported to the log and the progress listener."""

    def __init__(self, executor: Executor, worker_timeout: float = 900.0):
        self.executor, self.worker_timeout = executor, worker_timeout

    def run_batches(
        self, stage: Stage, batches: Sequence[Batch]
    ) -> Iterator[tuple[Batch, Counts | BaseException]]:
        for index, outcome in run_on(
            self.executor, self.worker_timeout, [(stage, b) for b in batches], run_batch
        ):
            yield batches[index], outcome

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        """`fn(*args)` for each of `calls`, in order; the first error raised."""
        results = dict(run_on(self.executor, self.worker_timeout, calls, fn))
        for outcome in results.values():
            if isinstance(outcome, BaseException):
                raise outcome
        return [results[i] for i in range(len(calls))]

    def progress(self, label: str, total: int, already: int) -> LogProgress:
        return LogProgress(label, total, already, self.log)

    def log(self, message: str, *args: Any) -> None:
        logger.info(message, *args)

    def finished(
        self,
        kind: str,
        output: Any,
        run_key: str | None,
        summary: str,
        failure: BaseException | None,
        details: dict[str, Any],
    ) -> None:
        logger.info("%s %s:\n%s", kind, "failed" if failure else "completed", summary)
