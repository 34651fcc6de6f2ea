"""The Prefect edge of the one engine: batches become Prefect tasks (retries, a result cache
keyed by the run, the batch and its blocks' records and signatures) on a ThreadPoolTaskRunner or
a DaskTaskRunner over the backend's own cluster; progress and the summary become artifacts and
the outcome becomes events. The engine and the operations are the plain ones."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context, copy_context
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import FlowRunContext
from prefect.filesystems import WritableFileSystem
from prefect.futures import wait
from prefect.runtime import task_run
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote
from prefect_dask import DaskTaskRunner

from bioimage_tasks.backends import Executor, backend, worker_watchdog
from bioimage_tasks.chunk_manifest import damage_token
from bioimage_tasks.engine import TASKS_PER_WORKER, Batch, Counts, Stage, run_batch
from bioimage_tasks.operations import Operation, batch_done, execute
from bioimage_tasks.prefect.artifacts import Progress, publish_summary
from bioimage_tasks.prefect.events import emit_outcome_events
from bioimage_tasks.prefect.runners import workers_use_this_api
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import RunnerConfig
from bioimage_tasks.signatures import job_signatures

RESULTS_DIR = "prefect-results"  # cached batch results of a local output, beside its records
WATCH_INTERVAL = 2.0  # seconds between progress and worker checks while batches run


def _batch_run_name() -> str:
    stage, batch = task_run.parameters["stage"], task_run.parameters["batch"]
    stage = stage.unwrap() if isinstance(stage, quote) else stage  # as submitted (PrefectEdge)
    return f"{task_run.task_name} {stage.name} {batch.describe()}"


@task(name="process-blocks", task_run_name=_batch_run_name, cache_policy=NO_CACHE)
def process_blocks(stage: Stage, batch: Batch) -> Counts:
    """Write a batch of blocks (engine.run_batch: each block checks its records first)."""
    return run_batch(stage, batch)


def _batches_run_name() -> str:
    stage, batches = task_run.parameters["stage"], task_run.parameters["batches"]
    stage = stage.unwrap() if isinstance(stage, quote) else stage
    shown = [b.describe() for b in batches]
    listed = ", ".join(shown) if len(shown) <= 4 else f"{shown[0]}, ..., {shown[-1]}"
    return f"{task_run.task_name} {stage.name} {listed} ({len(batches)} batches on threads)"


class BatchesFailedError(Exception):
    """Some batches of a `process_batches` task failed: every batch's outcome (its counts or
    its error), so that the stage counts them as separate tasks would."""

    def __init__(self, outcomes: list[Counts | BaseException]):
        self.outcomes = outcomes
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        super().__init__(
            f"{len(errors)} of {len(outcomes)} batches failed; first: "
            f"{type(errors[0]).__name__}: {errors[0]}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return BatchesFailedError, (self.outcomes,)


@task(name="process-blocks", task_run_name=_batches_run_name, cache_policy=NO_CACHE)
def process_batches(stage: Stage, batches: list[Batch], threads: int) -> list[Counts]:
    """Write a small stage's batches (TASKS_PER_WORKER per thread, for balance) on `threads`
    threads in one task run: one task run's API calls and events instead of one each. Raises
    BatchesFailedError, with every batch's outcome, when any batch failed."""
    calls = [(stage, batch, copy_context()) for batch in batches]
    with ThreadPoolExecutor(min(threads, len(batches)), "process-blocks") as pool:
        outcomes = list(pool.map(_batch_outcome, calls))
    for value in outcomes:
        if isinstance(value, BaseException) and not isinstance(value, Exception):
            raise value  # KeyboardInterrupt, SystemExit
    if any(isinstance(value, BaseException) for value in outcomes):
        raise BatchesFailedError(outcomes)
    return outcomes


def _batch_outcome(call: tuple[Stage, Batch, Context]) -> Counts | BaseException:
    stage, batch, context = call
    try:
        return context.run(run_batch, stage, batch)  # in the task run's context
    except BaseException as error:  # noqa: BLE001 - returned to the task, which raises it
        return error


@task(name="measure-range", cache_policy=NO_CACHE)
def call_task(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """`fn(*args)` as a Prefect task (the value range a resize clips to)."""
    return fn(*args)


def batch_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect cache key of a batch: the run key (operation and parameters, input identity, grid,
    mask, the output's identity token and ownership epoch), the batch, its blocks' input
    signatures and their latest records (none, when they are lost). Computed where the batch
    runs, a few thousand blocks at a time. No key, no caching, for outputs without records."""
    stage, batch = parameters["stage"], parameters["batch"]
    records = stage.job.records
    if records is None:
        return None
    digest = hashlib.blake2b(f"{stage.name} {batch}".encode(), digest_size=8)
    for block_ids in stage.batch_blocks(batch):
        signatures = job_signatures(stage.job, block_ids)  # input rewritten: a new key ...
        stored = {
            b: f"{e.signature}@{e.time_ns}" for b, e in records.entries(block_ids).items()
        }  # ... or a block
        digest.update(",".join(f"{b}:{s}:{stored.get(b)}" for b, s in signatures.items()).encode())
        digest.update(damage_token(stage.job, block_ids).encode())  # files damaged since: a new key
    return f"bioimage-tasks-{records.key}-{digest.hexdigest()}"


def batches_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect cache key of a `process_batches` task: its batches' keys together."""
    keys = [
        batch_cache_key(context, {"stage": parameters["stage"], "batch": batch})
        for batch in parameters["batches"]
    ]
    if None in keys:
        return None
    digest = hashlib.blake2b(" ".join(keys).encode(), digest_size=8).hexdigest()
    return f"bioimage-tasks-batches-{digest}"


_STORAGE_BLOCKS: dict[tuple[str | None, str], WritableFileSystem] = {}  # (API URL, slug): block
_BLOCK_SLUG = re.compile(r"^[a-z0-9-]+/[a-z0-9-]+$")


def result_storage(config: RunnerConfig, records: BlockRecords) -> WritableFileSystem | Path | None:
    """Where Prefect keeps cached batch results: `config.result_storage` (a block, which Prefect
    requires saved, a block slug "block-type/name" such as "remote-file-system/lab-results", or
    a folder), or a folder beside the block records of a local output. None for an output on
    object storage without one: its block records alone resume it. A folder is passed as a
    `Path`, which Prefect resolves itself without an API call (a saved block per output folder
    cost ~4 API calls and ~50 ms per new output); a process reuses the blocks it loaded."""
    chosen = config.result_storage
    if isinstance(chosen, WritableFileSystem):
        if chosen._block_document_id is None:
            digest = hashlib.blake2b(chosen.model_dump_json().encode(), digest_size=8).hexdigest()
            chosen.save(f"bioimage-tasks-{digest}", overwrite=True)
        return chosen
    if chosen is None and not isinstance(records.directory, str):
        return None
    if isinstance(chosen, str) and _BLOCK_SLUG.match(chosen) and not os.path.isdir(chosen):
        known = (PREFECT_API_URL.value(), chosen)  # a block lives in one server's database
        if known not in _STORAGE_BLOCKS:
            _STORAGE_BLOCKS[known] = Block.load(chosen)
        return _STORAGE_BLOCKS[known]
    if chosen is None:  # beside the records: <array>/.bioimage-tasks/prefect-results
        chosen = os.path.join(os.path.dirname(os.path.dirname(records.directory)), RESULTS_DIR)
    return Path(os.path.abspath(os.fspath(chosen)))


class PrefectEdge:
    """Batches as Prefect tasks on `runner`, with the run's retries and result cache; progress
    and summary as artifacts; the outcome as events. Batches found done are not submitted (a
    cache hit costs ~15 ms on threads and ~80-300 ms on Dask, a look at the records nothing)."""

    tasks_per_worker = TASKS_PER_WORKER  # a small stage's batches share one task run (merges)

    def __init__(self, runner: Any, executor: Executor, config: RunnerConfig):
        self.runner, self.executor, self.config = runner, executor, config
        self.storage: dict[int, Any] = {}

    def select_batches(self, stage: Stage, batches: Sequence[Batch]) -> list[Batch]:
        return [b for b in batches if not batch_done(stage, b)]

    def batch_task(self, stage: Stage, merged: bool = False) -> Any:
        task_fn = (process_batches if merged else process_blocks).with_options(
            retries=self.config.retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=self.config.retry_delay),
        )
        records = stage.job.records
        storage = None if records is None else self.result_storage(records)
        if storage is None:
            return task_fn
        return task_fn.with_options(
            cache_policy=CacheKeyFnPolicy(
                cache_key_fn=batches_cache_key if merged else batch_cache_key
            ),
            persist_result=True,
            result_storage=storage,
            refresh_cache=getattr(stage, "rewrite", False),
        )

    def result_storage(self, records: BlockRecords) -> Any:
        """One result storage for every stage, saved before the first: a block saved per stage is
        an API write between stages, which SQLite's "database is locked" (a 503) delays by 2 s."""
        if "storage" not in self.storage:
            self.storage["storage"] = result_storage(self.config, records)
        return self.storage["storage"]

    def run_batches(
        self, stage: Stage, batches: Sequence[Batch]
    ) -> Iterator[tuple[Batch, Counts | BaseException]]:
        if self.merges(batches):
            yield from self.run_merged(stage, batches)
            return
        futures = [
            self.runner.submit(self.batch_task(stage), {"stage": self.opaque(stage), "batch": b})
            for b in batches
        ]
        check_workers = worker_watchdog(self.executor.client, self.config.worker_timeout)
        pending = dict(zip(map(id, futures), zip(batches, futures)))
        while pending:
            done = wait([f for _, f in pending.values()], timeout=WATCH_INTERVAL).done
            for future in done:
                batch, _ = pending.pop(id(future))
                yield batch, outcome(future)
            if pending:
                check_workers()

    def merges(self, batches: Sequence[Batch]) -> bool:
        """Whether `batches` run in one task run: a small stage's few batches (TASKS_PER_WORKER
        per thread at most), on threads. A Prefect task run costs ~15 ms of this process's CPU
        and ~30 ms of the server's (3 events), which a short run pays beside its work."""
        workers = self.executor.num_workers
        return 1 < len(batches) <= TASKS_PER_WORKER * workers and self.executor.client is None

    def run_merged(
        self, stage: Stage, batches: Sequence[Batch]
    ) -> Iterator[tuple[Batch, Counts | BaseException]]:
        """`batches` in one `process_batches` task run on the backend's threads."""
        parameters = {
            "stage": self.opaque(stage),
            "batches": list(batches),
            "threads": self.executor.num_workers,
        }
        result = outcome(self.runner.submit(self.batch_task(stage, merged=True), parameters))
        if isinstance(result, BatchesFailedError):
            outcomes = result.outcomes
        elif isinstance(result, BaseException):
            outcomes = [result] * len(batches)
        else:
            outcomes = result
        yield from zip(batches, outcomes)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        futures = [
            self.runner.submit(call_task, {"fn": fn, "args": self.opaque(args)}) for args in calls
        ]
        return [future.result() for future in futures]

    def opaque(self, parameter: Any) -> Any:
        """`parameter` as a task parameter Prefect does not walk through looking for futures (a
        stage's job, sources and sinks: ~8 ms a task on threads). Only on threads: Dask workers
        would receive the wrapper's tuple."""
        return quote(parameter) if isinstance(self.runner, ThreadPoolTaskRunner) else parameter

    def progress(self, label: str, total: int, already: int) -> Progress:
        return Progress(total, already, label)

    def log(self, message: str, *args: Any) -> None:
        get_run_logger().info(message, *args)

    def finished(
        self,
        kind: str,
        output: Any,
        run_key: str | None,
        summary: str,
        failure: BaseException | None,
        details: dict[str, Any],
    ) -> None:
        publish_summary(summary, key=f"{kind}-summary")
        emit_outcome_events(kind, output, run_key, failure, details)


def outcome(future: Any) -> Counts | BaseException:
    """A finished Prefect future's result, or the error it ended with."""
    future.wait()  # done already; this stores the final state on Dask futures
    state = future.state
    if state.is_completed():
        return future.result()
    error = state.result(raise_on_failure=False) if state.is_final() else None
    return error if isinstance(error, BaseException) else RuntimeError(f"task {state.type.value}")


@contextlib.contextmanager
def task_runner(executor: Executor) -> Iterator[Any]:
    """Prefect's task runner over the backend's workers: threads, or the backend's Dask cluster."""
    if executor.client is None:
        runner = ThreadPoolTaskRunner(max_workers=executor.num_workers)
    else:
        runner = DaskTaskRunner(address=executor.address)
    with runner:
        yield runner


def run_in_flow(operation: Operation) -> Any:
    """Run `operation` with the Prefect edge inside the current flow run (or plainly, when called
    outside one: `flow.fn(...)`). Dask workers are pointed at this flow's API before they start."""
    if FlowRunContext.get() is None:
        from bioimage_tasks.api import run_plain

        return run_plain(operation)
    with (
        workers_use_this_api(operation.job_type),
        backend(operation.job_type, operation.num_workers, operation.config) as executor,
        task_runner(executor) as runner,
    ):
        return execute(operation, PrefectEdge(runner, executor, operation.config))
