"""Block-wise execution without orchestration: what one block does, what a batch does, and how
blocks are batched. Prefect tasks (tasks.py) and every backend call these same functions."""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bioimage_tasks.chunk_manifest import StampBuffer, hold_stamps, outputs_intact, start_stamp
from bioimage_tasks.errors import BlocksFailedError
from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.io import ArraySource, Source, TensorStoreSource, start_read
from bioimage_tasks.kernels.masking import merge_masked
from bioimage_tasks.records import BlockRecords, executor
from bioimage_tasks.signatures import job_signatures

_THREAD = threading.local()  # `stop`: the event that ends this thread's batches early (Ctrl-C)
# Fast blocks are recorded together, RECORD_EVERY at a time or after RECORD_SECONDS (an append
# per block costs as much as a small block's write); a block that took SLOW_BLOCK_SECONDS or more
# is recorded at once. A kill loses at most that many records or that much work (those blocks are
# computed again).
RECORD_EVERY = 64
RECORD_SECONDS = 1.0
SLOW_BLOCK_SECONDS = 0.05
StartWrite = Callable[
    [], Callable[[], None]
]  # starts writes; returns a function that waits for them


class Job(Protocol):
    """What `process_batch` runs: a grid of blocks, their records, and per block a read that can
    start early and a computation that hands its writes to `write`. Every backend runs jobs
    through the same loop, so a job never knows whether it runs on threads, Dask or SLURM."""

    grid: BlockGrid
    records: BlockRecords | None

    def prefetch(self, block_id: int) -> Callable[[], Any] | None:
        """Start reading what block `block_id` needs (None: read it in `run_block`)."""

    def run_block(
        self,
        block_id: int,
        prefetched: Callable[[], Any] | None,
        write: Callable[[StartWrite], None],
    ) -> int:
        """Compute the block, passing each group of writes to `write` (which starts it once the
        writes before it are done); return the voxels written (0: nothing to write)."""


@dataclass(frozen=True, eq=False)
class BlockJob:
    """Copy `source` into `sink` block by block over `grid`, only where `mask` is set, recording
    each finished block in `records` (when the output has them). A block larger than
    `piece_shape` (what the memory budget allows) is computed and written piece after piece:
    its task owns the block's chunks, so the pieces' partial chunk writes never race."""

    source: Source
    sink: ArraySource | TensorStoreSource
    grid: BlockGrid
    mask: Source | None = None
    records: BlockRecords | None = None
    piece_shape: tuple[int, ...] | None = None

    def pieces(self, block_id: int) -> list[tuple[slice, ...]]:
        """The regions block `block_id` is computed in, in order."""
        block = self.grid.block_slices(block_id)
        return [block] if self.piece_shape is None else sub_regions(block, self.piece_shape)

    def prefetch(self, block_id: int) -> Callable[[], np.ndarray] | None:
        return None if self.mask is not None else start_read(self.source, self.pieces(block_id)[0])

    def run_block(
        self,
        block_id: int,
        prefetched: Callable[[], np.ndarray] | None,
        write: Callable[[StartWrite], None],
    ) -> int:
        """Compute the block's pieces and write them; writing a block twice gives the same
        output, so retries and re-executed tasks are safe."""
        voxels = 0
        for index, key in enumerate(self.pieces(block_id)):
            written, data = self.compute(key, prefetched if index == 0 else None)
            if written:
                voxels += written
                write(functools.partial(self.sink.start_write, key, data))
            else:  # left as it is: its files' stamps vouch for it on a rerun
                write(functools.partial(start_stamp, self.sink, key))
        return voxels

    def written_regions(self, block_id: int) -> list[tuple[Any, tuple[slice, ...]]]:
        """Where block `block_id` writes: (sink, region) pairs (chunk_manifest.outputs_intact)."""
        return [(self.sink, self.grid.block_slices(block_id))]

    def compute(
        self, key: tuple[slice, ...], prefetched: Callable[[], np.ndarray] | None
    ) -> tuple[int, np.ndarray | None]:
        """(voxels to write, values) of region `key`: 0 and None when its mask is empty; a
        partly masked region keeps the sink's values outside the mask."""
        if self.mask is None:
            data = prefetched() if prefetched is not None else self.source[key]
            return data.size, data
        inside = self.mask[key].astype(bool, copy=False)
        if not inside.any():
            return 0, None
        data = self.source[key]
        if not inside.all():
            data = merge_masked(data, self.sink[key], inside)
        return int(inside.sum()), data


def sub_regions(region: tuple[slice, ...], piece_shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """`region` cut into C-ordered pieces of at most `piece_shape`.

    >>> [tuple((s.start, s.stop) for s in piece)
    ...  for piece in sub_regions((slice(0, 5), slice(2, 4)), (2, 2))]
    [((0, 2), (2, 4)), ((2, 4), (2, 4)), ((4, 5), (2, 4))]
    """
    starts = [range(r.start, r.stop, p) for r, p in zip(region, piece_shape)]
    return [
        tuple(slice(a, min(a + p, r.stop)) for a, p, r in zip(corner, piece_shape, region))
        for corner in itertools.product(*starts)
    ]


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


class BatchWrites:
    """The writes of a batch, one group in flight at a time: a group starts once the one before
    it is done, so consecutive writes into the same chunk or shard never race, while the next
    block is already being computed. A block is recorded once all its writes are done."""

    def __init__(
        self,
        job: Job,
        report: BatchReport,
        failed: dict[int, str],
        signatures: dict[int, str | None] | None = None,
        stamps: StampBuffer | None = None,
    ):
        self.job, self.report, self.failed, self.signatures = job, report, failed, signatures or {}
        self.stamps = stamps  # the output files' stamps, appended just before the records
        self.in_flight: tuple[int, Callable[[], None]] | None = None
        self.closed: dict[int, int] = {}  # blocks that handed over all their writes -> voxels
        self.finished: list[tuple[int, str | None]] = []  # written, not yet recorded
        self.flushed = self.previous_settle = time.monotonic()

    def writer(self, block_id: int) -> Callable[[StartWrite], None]:
        """The `write` function a job calls for block `block_id`."""

        def write(start: StartWrite) -> None:
            self.wait()
            self.in_flight = (block_id, start())

        return write

    def wait(self) -> None:
        """Wait for the writes in flight; record their block if it is complete."""
        if self.in_flight is None:
            return
        (block_id, finish), self.in_flight = self.in_flight, None
        try:
            finish()
        except Exception as error:  # noqa: BLE001 - reported per block, re-raised by process_batch
            self.failed[block_id] = f"{type(error).__name__}: {error}"
        self._settle(block_id)

    def close(self, block_id: int, voxels: int) -> None:
        """Block `block_id` handed over all its writes."""
        self.closed[block_id] = voxels
        self._settle(block_id)

    def _settle(self, block_id: int) -> None:
        if block_id not in self.closed or (
            self.in_flight is not None and self.in_flight[0] == block_id
        ):
            return
        voxels = self.closed.pop(block_id)
        if block_id in self.failed:
            return
        if self.job.records is not None:
            self.finished.append((block_id, self.signatures.get(block_id)))
            now = time.monotonic()
            if (
                len(self.finished) >= RECORD_EVERY
                or now - self.flushed >= RECORD_SECONDS
                or now - self.previous_settle >= SLOW_BLOCK_SECONDS
            ):
                self.flush()
            self.previous_settle = now
        (self.report.written if voxels else self.report.skipped).append(block_id)
        self.report.voxels_written += voxels

    def flush(self) -> None:
        """Record the finished blocks not yet recorded (one append per records shard), after
        the stamps of the files they wrote."""
        if self.stamps is not None:
            self.stamps.flush()
        if self.finished:
            self.job.records.mark_done_many(self.finished)
            self.finished = []
        self.flushed = time.monotonic()


class Stopped(Exception):
    """The run was interrupted: a batch stops before its next block (its finished blocks stay
    recorded, so a rerun resumes)."""


def run_stoppable(stop: threading.Event, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in this thread, its batches ending before their next block once `stop` is set."""
    _THREAD.stop = stop
    try:
        return fn(*args)
    finally:
        _THREAD.stop = None


def check_not_stopped() -> None:
    stop = getattr(_THREAD, "stop", None)
    if stop is not None and stop.is_set():
        raise Stopped("the run was interrupted")


def blocks_done(
    job: Job,
    block_ids: Sequence[int],
    signatures: dict[int, str | None],
    clear_unreadable: bool = False,
) -> set[int]:
    """Which of `block_ids` are recorded as written from input with today's `signatures` and
    still hold the files they wrote (chunk_manifest.py; `clear_unreadable`: delete a file that no
    longer decodes, before its block is rewritten)."""
    if job.records is None:
        return set()
    done = job.records.done_among(list(block_ids), signatures)
    return outputs_intact(job, done, clear_unreadable=clear_unreadable)


def process_batch(job: Job, block_ids: Sequence[int]) -> BatchReport:
    """Write a batch of blocks, except those already recorded as done (a retried batch, or one
    Dask re-executes after losing a worker, only does what is missing). Blocks overlap in a
    pipeline: while one block is computed, the next one's input is read and the previous one's
    output written, in tensorstore's threads; a block is recorded only once its writes are done.
    Every block is attempted; if any failed, BlocksFailedError names them."""
    report = BatchReport(executors={executor()})
    failed: dict[int, str] = {}
    # Signatures before any read: input changed after this is seen as changed by the next run.
    signatures = job_signatures(job, block_ids) if job.records is not None else {}
    done = blocks_done(job, block_ids, signatures, clear_unreadable=True)
    report.already_done = [block_id for block_id in block_ids if block_id in done]
    todo = [block_id for block_id in block_ids if block_id not in done]
    with hold_stamps() as stamps:
        _write_blocks(job, todo, BatchWrites(job, report, failed, signatures, stamps))
    if failed:
        raise BlocksFailedError(failed, len(block_ids), report=report)
    return report


def _write_blocks(job: Job, todo: Sequence[int], writes: BatchWrites) -> None:
    """Run blocks `todo` in a pipeline, handing their writes to `writes`."""
    failed = writes.failed
    reading: Callable[[], Any] | None = None
    try:
        for index, block_id in enumerate(todo):
            check_not_stopped()
            values, reading = reading, None
            if index + 1 < len(todo):
                with contextlib.suppress(
                    Exception
                ):  # that block then reads again, and reports, in its turn
                    reading = job.prefetch(todo[index + 1])
            try:
                voxels = job.run_block(block_id, values, writes.writer(block_id))
            except Exception as error:  # noqa: BLE001 - reported per block, re-raised below
                failed[block_id] = f"{type(error).__name__}: {error}"
                continue
            writes.close(block_id, voxels)
    finally:  # interrupted too: what finished stays recorded
        writes.wait()
        writes.flush()
