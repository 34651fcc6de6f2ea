"""Prefect tasks over batches of blocks, and the loop that maps them on a task runner.
Each task only calls the plain functions of `blockwise` / `resampling`."""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.futures import wait
from prefect.runtime import task_run
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import unmapped

from bioimage_tasks.blockwise import BatchReport, BlockJob, BlocksFailedError, Job, plan_batches, process_batch
from bioimage_tasks.chunk_manifest import damage_token, outputs_intact, stamp_writes
from bioimage_tasks.events import emit_outcome_events
from bioimage_tasks.grid import BlockGrid, default_block_shape
from bioimage_tasks.lease import claim_ownership, output_lease, owned_epoch
from bioimage_tasks.planning import BlockwisePlan, block_records, computation_key
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.reporting import Progress, publish_summary, summary_markdown
from bioimage_tasks.resampling import combine_ranges, measure_value_range
from bioimage_tasks.run_call import record_call
from bioimage_tasks.runners import RunnerConfig, worker_watchdog
from bioimage_tasks.signatures import job_signatures
from bioimage_tasks.io import ArraySource, Source, TensorStoreSource, storage_place
from bioimage_tasks.throttle import throttle_writes

WATCH_INTERVAL = 2.0  # seconds between progress and worker checks while batches run


def _batch_run_name() -> str:
    block_ids = task_run.parameters["block_ids"]
    return f"{task_run.task_name} {block_ids[0]}-{block_ids[-1]} ({len(block_ids)} blocks)"


@task(name="process-blocks", task_run_name=_batch_run_name, cache_policy=NO_CACHE)
def process_blocks(job: Job, block_ids: list[int]) -> BatchReport:
    """Write a batch of output blocks (see `blockwise.process_batch`)."""
    started = time.perf_counter()
    report = process_batch(job, block_ids)
    get_run_logger().debug(
        "blocks %d-%d: %d written, %d skipped (empty mask), %d already done, %d voxels, %.3f s on %s",
        block_ids[0], block_ids[-1], len(report.written), len(report.skipped), len(report.already_done),
        report.voxels_written, time.perf_counter() - started, ", ".join(report.executors),
    )
    return report


@task(name="measure-range", task_run_name=_batch_run_name, cache_policy=NO_CACHE)
def measure_range(source: Source, block_ids: list[int]) -> tuple[float, float]:
    """(min, max) of a batch of input blocks."""
    return measure_value_range(source, block_ids)


def map_batches(
    runner: TaskRunner,
    task_fn: Any,
    fixed: dict[str, Any],
    batches: Sequence[list[int]],
    worker_timeout: float,
    progress: Progress | None = None,
) -> list[Any]:
    """Run `task_fn(**fixed, block_ids=batch)` for every batch on `runner` and return the results in
    order; if any batch failed, raise BlocksFailedError listing every failed block. `fixed` values
    go unmapped to every task. A Dask backend without workers for `worker_timeout` s fails.
    `progress` advances by each batch's blocks as it finishes."""
    parameters = {name: unmapped(value) for name, value in fixed.items()}
    futures = runner.map(task_fn, parameters | {"block_ids": batches})
    check_workers = worker_watchdog(runner, worker_timeout)
    sizes = {id(future): len(batch) for future, batch in zip(futures, batches)}
    pending = list(futures)
    while pending:
        still_pending = list(wait(pending, timeout=WATCH_INTERVAL).not_done)
        if progress is not None:
            remaining = {id(future) for future in still_pending}
            progress.advance(sum(sizes[id(f)] for f in pending if id(f) not in remaining))
        pending = still_pending
        if pending:
            check_workers()
    results, failed = [], {}
    for batch, future in zip(batches, futures):
        future.wait()  # done already; this stores the final state on Dask futures
        state = future.state
        if state.is_completed():
            results.append(future.result())
            continue
        error = state.result(raise_on_failure=False) if state.is_final() else None
        if isinstance(error, BlocksFailedError):
            failed.update(error.failures)
        else:
            reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else f"task {state.type.value}"
            failed.update({block_id: reason for block_id in batch})
    if failed:
        raise BlocksFailedError(failed, sum(len(b) for b in batches))
    return results


def measure_source_range(runner: TaskRunner, source: Source, num_workers: int, config: RunnerConfig) -> tuple[float, float]:
    """The whole source's (min, max), measured in parallel batches."""
    grid = BlockGrid(source.shape, default_block_shape(source.shape, source.write_unit))
    batches = plan_batches(range(grid.n_blocks), num_workers, config.blocks_per_task)
    ranges = map_batches(runner, measure_range, {"source": source}, batches, config.worker_timeout)
    return combine_ranges(ranges)


def batch_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect cache key of a batch: the run key (operation and parameters, input identity, grid,
    mask, the output's identity token and ownership epoch) plus the exact block ids, their input
    signatures and their latest records (none, when they are lost). No key, no caching, for outputs
    without records (in memory)."""
    records = parameters["job"].records
    if records is None:
        return None
    signatures = job_signatures(parameters["job"], parameters["block_ids"])  # input rewritten: a new key
    # ... and so does a block rewritten since from other input (X, Y, X): its latest record.
    stored = {b: f"{e.signature}@{e.time_ns}" for b, e in records.entries(parameters["block_ids"]).items()}
    ids = ",".join(f"{b}:{s}:{stored.get(b)}" for b, s in signatures.items())
    ids += damage_token(parameters["job"], parameters["block_ids"])  # files damaged: a new key
    return f"bioimage-tasks-{records.key}-{hashlib.blake2b(ids.encode(), digest_size=8).hexdigest()}"


_STORAGE_BLOCKS: dict[tuple[str | None, str], WritableFileSystem] = {}  # (API URL, folder or slug): block
_BLOCK_SLUG = re.compile(r"^[a-z0-9-]+/[a-z0-9-]+$")


def result_storage(config: RunnerConfig, records: BlockRecords) -> WritableFileSystem | None:
    """The saved Prefect storage block (Prefect requires a saved one) for cached batch results:
    `config.result_storage` (a block, a block slug "block-type/name" such as
    "remote-file-system/lab-results", or a folder), or a folder beside the block records of a
    local output. None for an output on object storage without one: its block records alone
    resume it. Saving costs ~80-100 ms of API calls, loading ~40 ms, so an existing block for the
    folder is loaded, and a process reuses what it loaded or saved."""
    chosen = config.result_storage
    if isinstance(chosen, WritableFileSystem):
        if chosen._block_document_id is None:
            chosen.save(f"bioimage-tasks-{hashlib.blake2b(chosen.model_dump_json().encode(), digest_size=8).hexdigest()}",
                        overwrite=True)
        return chosen
    if chosen is None and not isinstance(records.directory, str):
        return None
    slug = chosen is not None and _BLOCK_SLUG.match(chosen) is not None and not os.path.isdir(chosen)
    target = chosen if slug else os.path.abspath(
        chosen or os.path.join(os.path.dirname(os.path.dirname(records.directory)), "prefect-results"))
    known = (PREFECT_API_URL.value(), target)  # a block lives in one server's database
    if known not in _STORAGE_BLOCKS:
        _STORAGE_BLOCKS[known] = Block.load(target) if slug else folder_block(target)
    return _STORAGE_BLOCKS[known]


def folder_block(path: str) -> LocalFileSystem:
    """The saved LocalFileSystem block of a folder, loaded if one exists, else saved."""
    name = f"bioimage-tasks-{hashlib.blake2b(path.encode(), digest_size=8).hexdigest()}"
    try:
        storage = LocalFileSystem.load(name)
    except ValueError:  # no block of that name yet
        storage = None
    if storage is None or storage.basepath != path:
        storage = LocalFileSystem(basepath=path)
        storage.save(name, overwrite=True)
    return storage


def current_blocks(records: BlockRecords, signatures: dict[int, str | None], job: Job | None = None
                   ) -> tuple[set[int], tuple[int, int]]:
    """Which of the blocks in `signatures` are recorded with today's signature (and, given their
    `job`, whose written files are as written: chunk_manifest.py), and how many recorded ones are
    not because their input, or else their mask, changed."""
    recorded = records.recorded(signatures)
    done = {b for b, s in recorded.items() if s == signatures[b]}
    stale = [(s or "").split("/") for b, s in recorded.items() if b not in done]
    current = [(signatures[b] or "").split("/") for b in recorded if b not in done]
    changed_input = sum(old[0] != new[0] for old, new in zip(stale, current))
    done = done if job is None else outputs_intact(job, done, get_run_logger())
    return done, (changed_input, len(stale) - changed_input)


def batch_task(config: RunnerConfig, records: BlockRecords | None, refresh: bool = False) -> Any:
    """`process_blocks` with the run's retries and, where the output keeps block records,
    Prefect's result cache keyed by the run key and the batch's block ids (`refresh`: recompute
    and overwrite cached batches, for explicitly re-run blocks)."""
    task_fn = process_blocks.with_options(
        retries=config.retries, retry_delay_seconds=exponential_backoff(backoff_factor=config.retry_delay)
    )
    storage = result_storage(config, records) if records is not None else None
    if storage is None:
        return task_fn
    return task_fn.with_options(
        cache_policy=CacheKeyFnPolicy(cache_key_fn=batch_cache_key), persist_result=True,
        result_storage=storage, refresh_cache=refresh,
    )


def check_resume_records(plan: BlockwisePlan, records: BlockRecords | None) -> None:
    """`resume_from=<record folder>` must name this computation's current records (checked before
    a claim of the output could drop them)."""
    if plan.resume_records is not None and (records is None or os.path.abspath(plan.resume_records) != records.directory):
        raise ValueError(
            f"resume_from={str(plan.resume_records)!r} holds the records of another computation; this call's "
            f"records are {records.url if records else 'not kept (output in memory)'}"
        )


def run_plan(
    runner: TaskRunner, plan: BlockwisePlan, num_workers: int, config: RunnerConfig, details: dict[str, Any], kind: str
) -> Any:
    """Create/open the output, hold its lease (a live run of another computation is refused before
    anything is written), claim it for this computation (records of another one stop counting),
    and write the planned blocks (`write_plan`). Returns the output array."""
    sink = plan.output.open()
    place = storage_place(sink)
    if place is None:
        check_resume_records(plan, None)
        return write_plan(runner, plan, sink, None, num_workers, config, details, kind)
    computation = computation_key(plan) or f"unkeyed-{uuid.uuid4().hex}"  # joined by no other run
    epoch = owned_epoch([place], computation)
    signatures = job_signatures(plan, plan.block_ids) if epoch is not None else None
    if epoch is not None and not plan.explicit_block_ids and plan.resume_records is None:
        records = block_records(plan, sink, epoch)
        done = current_blocks(records, signatures)[0] if records is not None else set()
        done = outputs_intact(BlockJob(plan.source, sink, plan.grid, plan.mask), done)
        if records is not None and done.issuperset(plan.block_ids):
            # a rerun of a finished run writes nothing, not even a lease
            return write_plan(runner, plan, sink, records, num_workers, config, details, kind, signatures)
    with output_lease([place], computation):
        check_resume_records(plan, block_records(plan, sink, owned_epoch([place], computation)))
        epoch = claim_ownership([place], computation)
        record_call(place, kind)  # for `verify --repair`
        return write_plan(runner, plan, sink, block_records(plan, sink, epoch), num_workers, config, details, kind,
                          signatures)


def write_plan(
    runner: TaskRunner, plan: BlockwisePlan, sink: ArraySource | TensorStoreSource, records: BlockRecords | None,
    num_workers: int, config: RunnerConfig, details: dict[str, Any], kind: str,
    signatures: dict[int, str | None] | None = None,
) -> Any:
    """Write the planned blocks in batches, resuming from the block records: blocks recorded from
    input (and mask) with today's signature (`signatures`, computed here unless given) are done, fully done batches are skipped, other batches
    skip their done blocks, and a batch Prefect finished before with the same cache key comes from
    Prefect's cache. Explicit `block_ids` are always rewritten. Progress and a summary (`details`
    plus what happened) are published as Prefect artifacts. Returns the output array."""
    logger = get_run_logger()
    done: set[int] = set()
    writer = throttle_writes(stamp_writes(sink), config.write_limit)
    job = BlockJob(plan.source, writer, plan.grid, plan.mask, records, plan.piece_shape)
    if records is not None:
        if plan.explicit_block_ids:
            records.forget(plan.block_ids)
        signatures = signatures or job_signatures(plan, plan.block_ids)
        done, changed = current_blocks(records, signatures, job)
        if any(changed):
            logger.info("%d recorded blocks are recomputed because their input changed, %d because their mask changed",
                        *changed)
    task_fn = batch_task(config, records, refresh=plan.explicit_block_ids)
    # Batches whose blocks are all recorded are not even submitted: a Prefect cache hit costs
    # ~15 ms on threads and ~80-300 ms on Dask, a look at the records nothing.
    batches = [b for b in plan.batches(plan.block_ids, num_workers, config.blocks_per_task) if not done.issuperset(b)]
    logger.info(
        "grid of %d blocks of shape %s over %s; %d of %d planned blocks already done; %d batches to run on %s; "
        "block records in %s",
        plan.grid.n_blocks, plan.grid.block_shape, plan.grid.shape, len(done), len(plan.block_ids), len(batches),
        details["backend"], records.url if records else "memory (no resume)",
    )
    details = details | {"output": f"{getattr(sink, 'name', 'output')} {sink.shape} {sink.dtype} chunks {sink.write_unit}",
                         "grid": f"{plan.grid.n_blocks} blocks of {plan.grid.block_shape}, {len(batches)} batches"}
    submitted = {block_id for batch in batches for block_id in batch}
    progress = Progress(len(plan.block_ids), len(done - submitted), kind)  # submitted blocks count as their batch ends
    started = time.perf_counter()
    report, failed, failure = BatchReport(), 0, None
    try:
        for batch_report in map_batches(runner, task_fn, {"job": job}, batches, config.worker_timeout, progress):
            report.add(batch_report)
    except BaseException as error:
        failed, failure = len(getattr(error, "failed_block_ids", ())), error
        raise
    finally:
        seconds = time.perf_counter() - started
        voxels = sum(math.prod(s.stop - s.start for s in plan.grid.block_slices(b)) for b in plan.block_ids)
        publish_summary(summary_markdown(details, report, len(done), failed, seconds, voxels), key=f"{kind}-summary")
        emit_outcome_events(kind, sink, records.key if records else None, failure,
                            {"blocks": len(plan.block_ids), "written": len(report.written), "seconds": round(seconds, 3)})
    logger.info(
        "wrote %d blocks (%d skipped, empty mask; %d found done), %d voxels, in %.2f s to %s; ran on %s",
        len(report.written), len(report.skipped), len(report.already_done), report.voxels_written, seconds,
        getattr(sink, "name", "output"), ", ".join(sorted(report.executors)) or "nothing",
    )
    return sink.array
