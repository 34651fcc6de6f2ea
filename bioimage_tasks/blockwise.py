"""Block-wise execution without orchestration: what one block does, what a batch does, and how
blocks are batched. Prefect tasks (tasks.py) and every backend call these same functions."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.kernels.masking import merge_masked
from bioimage_tasks.records import BlockRecords, executor
from bioimage_tasks.signatures import job_signatures
from bioimage_tasks.sources import ArraySource, Source, TensorStoreSource, start_read

# Bounds on Prefect tasks per run: enough per worker to balance load, batches of at most
# BLOCKS_PER_TASK blocks while that keeps the task count under MAX_TASKS, and never so many tasks
# that orchestration (~15 ms/task on threads, ~300 ms on Dask) dominates a large volume.
TASKS_PER_WORKER = 4
BLOCKS_PER_TASK = 64
MAX_TASKS = 256


@dataclass(frozen=True, eq=False)
class BlockJob:
    """Copy `source` into `sink` block by block over `grid`, only where `mask` is set, recording
    each finished block in `records` (when the output has them)."""

    source: Source
    sink: ArraySource | TensorStoreSource
    grid: BlockGrid
    mask: Source | None = None
    records: BlockRecords | None = None


@dataclass
class BatchReport:
    """What a batch did: blocks written, blocks skipped because their mask is empty, blocks found
    already done (a re-executed or retried batch), voxels written, and who ran it (SLURM job or
    host:pid)."""

    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    already_done: list[int] = field(default_factory=list)
    voxels_written: int = 0
    executors: set[str] = field(default_factory=set)

    def add(self, other: BatchReport) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.already_done += other.already_done
        self.voxels_written += other.voxels_written
        self.executors |= other.executors


class BlocksFailedError(RuntimeError):
    """Some blocks failed; the others are written. Carries the failed ids and how to re-run them."""

    def __init__(self, failed: dict[int, str], total: int):
        self.failures = dict(failed)
        self.total = total
        self.failed_block_ids = sorted(failed)
        first = self.failed_block_ids[0]
        super().__init__(
            f"{len(failed)} of {total} blocks failed: {self.failed_block_ids}. The other blocks are "
            f"written. Re-run the same call to resume (finished blocks are skipped), or re-run exactly "
            f"these blocks with the same call plus block_ids={self.failed_block_ids}. "
            f"First error (block {first}): {failed[first]}"
        )

    def __reduce__(self):
        return type(self), (self.failures, self.total)


def start_block(
    job: BlockJob, block_id: int, values: Callable[[], np.ndarray] | None = None
) -> tuple[int, Callable[[], None]]:
    """Compute one block (from `values`, its read started earlier, when given) and start writing
    it; return the voxels it writes (0 when its mask is empty) and a function that waits until
    the write is done. Writing a block twice gives the same output, so retries and re-executed
    tasks are safe."""
    key = job.grid.block_slices(block_id)
    if job.mask is None:
        data = values() if values is not None else job.source[key]
        return data.size, job.sink.start_write(key, data)
    inside = job.mask[key].astype(bool, copy=False)
    if not inside.any():
        return 0, lambda: None
    data = job.source[key]
    if not inside.all():
        data = merge_masked(data, job.sink[key], inside)
    return int(inside.sum()), job.sink.start_write(key, data)


def process_batch(job: BlockJob, block_ids: Sequence[int]) -> BatchReport:
    """Write a batch of blocks, except those already recorded as done (a retried batch, or one
    Dask re-executes after losing a worker, only does what is missing). Blocks overlap in a
    pipeline: while one block is computed, the next one's input is read (unmasked jobs) and the
    previous one's output written, in tensorstore's threads; a block is recorded only once its
    write is done. Every block is attempted; if any failed, BlocksFailedError names them."""
    report = BatchReport(executors={executor()})
    failed: dict[int, str] = {}
    # Signatures before any read: input changed after this is seen as changed by the next run.
    signatures = job_signatures(job, block_ids) if job.records is not None else {}
    done = job.records.done_among(list(block_ids), signatures) if job.records is not None else set()
    report.already_done = [block_id for block_id in block_ids if block_id in done]
    todo = [block_id for block_id in block_ids if block_id not in done]
    writing: list[tuple[int, int, Callable[[], None]]] = []  # at most one block in flight

    def finish_writing() -> None:
        for block_id, voxels, finish in writing:
            try:
                finish()
            except Exception as error:  # noqa: BLE001 - reported per block, re-raised below
                failed[block_id] = f"{type(error).__name__}: {error}"
                continue
            if job.records is not None:
                job.records.mark_done(block_id, signatures.get(block_id))
            (report.written if voxels else report.skipped).append(block_id)
            report.voxels_written += voxels
        writing.clear()

    reading: Callable[[], np.ndarray] | None = None
    for index, block_id in enumerate(todo):
        values, reading = reading, None
        if job.mask is None and index + 1 < len(todo):
            with contextlib.suppress(Exception):  # that block then reads again, and reports, in its turn
                reading = start_read(job.source, job.grid.block_slices(todo[index + 1]))
        try:
            started = start_block(job, block_id, values)
        except Exception as error:  # noqa: BLE001 - reported per block, re-raised below
            failed[block_id] = f"{type(error).__name__}: {error}"
            continue
        finish_writing()
        writing.append((block_id, *started))
    finish_writing()
    if failed:
        raise BlocksFailedError(failed, len(block_ids))
    return report


def plan_batches(block_ids: Sequence[int], num_workers: int, blocks_per_task: int | None = None) -> list[list[int]]:
    """Split `block_ids` into contiguous batches: TASKS_PER_WORKER per worker, more (of at most
    BLOCKS_PER_TASK blocks) for large volumes, but no more than MAX_TASKS (unless that many workers);
    or batches of exactly `blocks_per_task` when given.

    >>> [len(b) for b in plan_batches(range(10), 1)]
    [3, 3, 2, 2]
    >>> len(plan_batches(range(100_000), 8))
    256
    """
    block_ids = list(block_ids)
    if blocks_per_task is not None:
        return [block_ids[i : i + blocks_per_task] for i in range(0, len(block_ids), blocks_per_task)]
    wanted = min(MAX_TASKS, math.ceil(len(block_ids) / BLOCKS_PER_TASK))
    n_batches = min(len(block_ids), max(TASKS_PER_WORKER * num_workers, wanted))
    if n_batches == 0:
        return []
    size, extra = divmod(len(block_ids), n_batches)
    bounds = [i * size + min(i, extra) for i in range(n_batches + 1)]
    return [block_ids[a:b] for a, b in zip(bounds, bounds[1:])]
