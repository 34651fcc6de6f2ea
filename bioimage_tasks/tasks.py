"""Prefect tasks over batches of blocks, and the loop that maps them on a task runner.
Each task only calls the plain functions of `blockwise` / `resampling`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import quote, unmapped

from bioimage_tasks.blockwise import BatchReport, BlockJob, BlocksFailedError, plan_batches, process_batch
from bioimage_tasks.grid import BlockGrid, default_block_shape
from bioimage_tasks.planning import BlockwisePlan
from bioimage_tasks.resampling import combine_ranges, measure_value_range
from bioimage_tasks.sources import Source


def _batch_run_name() -> str:
    block_ids = task_run.parameters["block_ids"]
    return f"{task_run.task_name} {block_ids[0]}-{block_ids[-1]} ({len(block_ids)} blocks)"


@task(name="process-blocks", task_run_name=_batch_run_name, cache_policy=NO_CACHE)
def process_blocks(job: BlockJob, block_ids: list[int]) -> BatchReport:
    """Write a batch of output blocks (see `blockwise.process_batch`)."""
    return process_batch(job, block_ids)


@task(name="measure-range", task_run_name=_batch_run_name, cache_policy=NO_CACHE)
def measure_range(source: Source, block_ids: list[int]) -> tuple[float, float]:
    """(min, max) of a batch of input blocks."""
    return measure_value_range(source, block_ids)


def map_batches(runner: TaskRunner, task_fn: Any, fixed: dict[str, Any], batches: Sequence[list[int]]) -> list[Any]:
    """Run `task_fn(**fixed, block_ids=batch)` for every batch on `runner` and return the results in
    order; if any batch failed, raise BlocksFailedError listing every failed block. `fixed` values
    are passed as they are (quoted: Prefect neither maps nor inspects them)."""
    parameters = {name: unmapped(quote(value)) for name, value in fixed.items()}
    futures = runner.map(task_fn, parameters | {"block_ids": batches})
    results, failed = [], {}
    for batch, future in zip(batches, futures):
        future.wait()
        state = future.state
        if state.is_completed():
            results.append(future.result())
            continue
        error = state.result(raise_on_failure=False)
        if isinstance(error, BlocksFailedError):
            failed.update(error.failures)
        else:
            failed.update({block_id: f"{type(error).__name__}: {error}" for block_id in batch})
    if failed:
        raise BlocksFailedError(failed, sum(len(b) for b in batches))
    return results


def measure_source_range(runner: TaskRunner, source: Source, num_workers: int) -> tuple[float, float]:
    """The whole source's (min, max), measured in parallel batches."""
    grid = BlockGrid(source.shape, default_block_shape(source.shape, source.write_unit))
    ranges = map_batches(runner, measure_range, {"source": source}, plan_batches(range(grid.n_blocks), num_workers))
    return combine_ranges(ranges)


def run_plan(runner: TaskRunner, plan: BlockwisePlan, num_workers: int, blocks_per_task: int | None) -> Any:
    """Create/open the output, write every planned block in batches, and return the output array."""
    logger = get_run_logger()
    sink = plan.output.open()
    job = BlockJob(plan.source, sink, plan.grid, plan.mask)
    batches = plan_batches(plan.block_ids, num_workers, blocks_per_task)
    logger.info(
        "grid of %d blocks of shape %s over %s; running %d blocks in %d batches on %d workers",
        plan.grid.n_blocks, plan.grid.block_shape, plan.grid.shape, len(plan.block_ids), len(batches), num_workers,
    )
    started = time.perf_counter()
    report = BatchReport()
    for batch_report in map_batches(runner, process_blocks, {"job": job}, batches):
        report.add(batch_report)
    logger.info(
        "wrote %d blocks (%d skipped, empty mask), %d voxels, in %.2f s to %s",
        len(report.written), len(report.skipped), report.voxels_written, time.perf_counter() - started,
        getattr(sink, "name", "output"),
    )
    return sink.array

