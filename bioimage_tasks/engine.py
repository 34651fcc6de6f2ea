"""The one engine: every operation is a list of stages (a job over a grid of blocks), and one
runner resumes, batches, reports progress, summarises and emits events for all of them.

How batches execute and who hears about them is an `Edge`: the plain edge (plain.py) runs them
on threads or a Dask cluster and logs; the Prefect edge (prefect/edge.py) maps them as Prefect
tasks and publishes artifacts and events. Neither the runner nor a job knows which it is.

State in the calling process stays bounded whatever the number of blocks: a batch is a range of
write groups (or a few explicit ids), batches are planned as ranges, each batch checks its own
blocks' records where it runs and reports counts and its first few failures, never id lists."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bioimage_tasks.blockwise import BatchReport, BlocksFailedError, process_batch
from bioimage_tasks.grid import BlockGrid

# Bounds on batches per stage: enough per worker to balance load, batches of at most
# BLOCKS_PER_TASK blocks while that keeps the count under MAX_BATCHES (Prefect tasks cost
# ~15 ms on threads and ~300 ms on Dask each), never more than MAX_BATCHES unless that many workers.
TASKS_PER_WORKER = 4
BLOCKS_PER_TASK = 64
MAX_BATCHES = 256
CHECK_BLOCKS = (
    4096  # blocks a batch checks and runs at once: its memory does not grow with its size
)
FIRST_FAILURES = 20  # failed blocks named (with their errors) in reports and errors

logger = logging.getLogger("bioimage_tasks")


@dataclass(frozen=True)
class Batch:
    """Blocks of a stage: the write groups `start` to `stop` (a range, never a list), or the
    `explicit` block ids a caller asked for (`block_ids=`, a list the caller already holds)."""

    start: int = 0
    stop: int = 0
    explicit: tuple[int, ...] | None = None

    def describe(self) -> str:
        if self.explicit is not None:
            return f"blocks {self.explicit[0]}-{self.explicit[-1]} ({len(self.explicit)} given)"
        return f"{self.start}-{self.stop - 1}"


@dataclass(frozen=True, eq=False)
class Stage:
    """One job over its grid: `name` for logs, `rows` (summary rows it completes), the write
    unit (chunk or shard) whose sharing blocks must stay in one batch, and `block_ids` when the
    caller chose blocks. Blocks are grouped so that blocks of one write unit are consecutive."""

    name: str
    job: Any
    write_unit: tuple[int, ...] | None = None
    block_ids: tuple[int, ...] | None = None
    rows: tuple[Any, ...] = ()

    @property
    def grid(self) -> BlockGrid:
        return self.job.grid

    @property
    def group_span(self) -> tuple[int, ...]:
        """Blocks per write group along each axis (1 where blocks own their write units)."""
        grid, unit = self.grid, self.write_unit
        if unit is None or not grid.shares_write_units(unit):
            return (1,) * len(grid.shape)
        return tuple(math.lcm(b, u) // b for b, u in zip(grid.block_shape, unit))

    @property
    def group_grid(self) -> tuple[int, ...]:
        return tuple(-(-g // k) for g, k in zip(self.grid.grid_shape, self.group_span))

    @property
    def n_blocks(self) -> int:
        return self.grid.n_blocks if self.block_ids is None else len(self.block_ids)

    def group_blocks(self, group: int) -> list[int]:
        """The block ids of write group `group`, in C order."""
        span, grid_shape = self.group_span, self.grid.grid_shape
        corner = [int(p) * k for p, k in zip(np.unravel_index(group, self.group_grid), span)]
        ranges = [range(c, min(c + k, g)) for c, k, g in zip(corner, span, grid_shape)]
        return [int(np.ravel_multi_index(p, grid_shape)) for p in itertools.product(*ranges)]

    def batch_blocks(self, batch: Batch) -> Iterator[list[int]]:
        """The blocks of `batch` in runs of at most about CHECK_BLOCKS, whole write groups each."""
        if batch.explicit is not None:
            for start in range(0, len(batch.explicit), CHECK_BLOCKS):
                yield list(batch.explicit[start : start + CHECK_BLOCKS])
            return
        per_group = math.prod(self.group_span)
        if per_group == 1:
            for start in range(batch.start, batch.stop, CHECK_BLOCKS):
                yield list(range(start, min(start + CHECK_BLOCKS, batch.stop)))
            return
        step = max(1, CHECK_BLOCKS // per_group)
        for start in range(batch.start, batch.stop, step):
            yield [
                b for g in range(start, min(start + step, batch.stop)) for b in self.group_blocks(g)
            ]


def plan_batches(
    stage: Stage,
    num_workers: int,
    blocks_per_task: int | None = None,
    per_worker: int = TASKS_PER_WORKER,
) -> list[Batch]:
    """The batches of `stage`: `per_worker` per worker, more (of at most BLOCKS_PER_TASK blocks)
    for large grids but at most MAX_BATCHES (unless that many workers), or batches of about
    `blocks_per_task` blocks. Ranges of write groups: as many objects as batches.

    >>> class Job: grid = BlockGrid((100,), (10,))
    >>> [(b.start, b.stop) for b in plan_batches(Stage("s", Job()), 1)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    >>> len(plan_batches(Stage("s", type("J", (), {"grid": BlockGrid((10**7,), (1,))})()), 8))
    256
    """
    if stage.block_ids is not None:
        units, per_unit = len(stage.block_ids), 1
    else:
        units, per_unit = math.prod(stage.group_grid), math.prod(stage.group_span)
    if units == 0:
        return []
    total = units * per_unit
    if blocks_per_task is not None:
        wanted = math.ceil(total / blocks_per_task)
    else:
        wanted = max(per_worker * num_workers, min(MAX_BATCHES, math.ceil(total / BLOCKS_PER_TASK)))
    count = min(units, wanted)
    size, extra = divmod(units, count)
    cuts = [i * size + min(i, extra) for i in range(count + 1)]
    if stage.block_ids is not None:
        ids = stage.block_ids
        return [Batch(explicit=tuple(ids[a:b])) for a, b in zip(cuts, cuts[1:])]
    return [Batch(a, b) for a, b in zip(cuts, cuts[1:])]


@dataclass
class Counts:
    """What a batch (or a stage, or a run) did, as counts: blocks written, skipped (empty
    mask), found done, failed; voxels written; who ran them; the first few failures by id."""

    written: int = 0
    skipped: int = 0
    already_done: int = 0
    failed: int = 0
    voxels: int = 0
    executors: set[str] = field(default_factory=set)
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def blocks(self) -> int:
        return self.written + self.skipped + self.already_done + self.failed

    def add(self, other: Counts) -> Counts:
        self.written += other.written
        self.skipped += other.skipped
        self.already_done += other.already_done
        self.failed += other.failed
        self.voxels += other.voxels
        self.executors |= other.executors
        for block_id, error in other.failures.items():
            if len(self.failures) < FIRST_FAILURES:
                self.failures[block_id] = error
        return self

    def add_report(self, report: BatchReport) -> None:
        self.written += len(report.written)
        self.skipped += len(report.skipped)
        self.already_done += len(report.already_done)
        self.voxels += report.voxels_written
        self.executors |= report.executors


def run_batch(stage: Stage, batch: Batch) -> Counts:
    """Run every block of `batch` (where the batch runs: a thread, a Dask worker, a SLURM job),
    a few thousand at a time, each checking its records first; return the counts. If any block
    failed, raise BlocksFailedError carrying the counts and the first failures."""
    counts = Counts()
    for block_ids in stage.batch_blocks(batch):
        try:
            counts.add_report(process_batch(stage.job, block_ids))
        except BlocksFailedError as error:
            counts.add_report(error.report)
            counts.failed += error.n_failed
            counts.add(Counts(failures=error.failures))
    if counts.failed:
        raise BlocksFailedError(
            counts.failures, counts.blocks, n_failed=counts.failed, counts=counts
        )
    return counts


class Edge(Protocol):
    """How batches run and who hears about it (plain.py, prefect/edge.py)."""

    def run_batches(
        self, stage: Stage, batches: Sequence[Batch]
    ) -> Iterator[tuple[Batch, Counts | BaseException]]:
        """Run `run_batch(stage, b)` for each batch; yield each outcome as it finishes."""

    def progress(self, label: str, total: int, already: int) -> Any:
        """A progress object with `advance(blocks)`."""

    def log(self, message: str, *args: Any) -> None: ...

    def finished(
        self,
        kind: str,
        output: Any,
        run_key: str | None,
        summary: str,
        failure: BaseException | None,
        details: dict[str, Any],
    ) -> None:
        """Publish the run's summary and its outcome (events, where the edge has them)."""


def pending_batches(
    edge: Edge, stage: Stage, num_workers: int, blocks_per_task: int | None
) -> list[Batch]:
    """The stage's batches the edge should run (an edge may leave out batches it finds done)."""
    batches = plan_batches(
        stage, num_workers, blocks_per_task, getattr(edge, "tasks_per_worker", TASKS_PER_WORKER)
    )
    select = getattr(edge, "select_batches", None)
    return batches if select is None else select(stage, batches)


def run_stage(edge: Edge, stage: Stage, batches: Sequence[Batch], label: str) -> Counts:
    """Run `batches` of `stage` on `edge`, advancing a progress by each finished batch's blocks;
    raise BlocksFailedError with the stage's counts when blocks failed, or the first other error."""
    planned = sum(batch_size(stage, b) for b in batches)
    progress = edge.progress(label, stage.n_blocks, stage.n_blocks - planned)
    counts, error = Counts(), None
    for batch, outcome in edge.run_batches(stage, batches):
        if isinstance(outcome, Counts):
            counts.add(outcome)
        elif isinstance(outcome, BlocksFailedError) and outcome.counts is not None:
            counts.add(outcome.counts)
        else:
            error = error or outcome
            counts.failed += batch_size(stage, batch)
            for block_id in itertools.islice(
                itertools.chain.from_iterable(stage.batch_blocks(batch)), FIRST_FAILURES
            ):
                counts.failures.setdefault(block_id, f"{type(outcome).__name__}: {outcome}")
        progress.advance(batch_size(stage, batch))
    counts.already_done += stage.n_blocks - planned
    if error is not None and not isinstance(error, Exception):
        raise error  # KeyboardInterrupt, SystemExit
    if counts.failed:
        raise BlocksFailedError(
            counts.failures, stage.n_blocks, n_failed=counts.failed, counts=counts
        )
    return counts


def batch_size(stage: Stage, batch: Batch) -> int:
    """Blocks in `batch` (edge write groups hold fewer)."""
    if batch.explicit is not None:
        return len(batch.explicit)
    if math.prod(stage.group_span) == 1:
        return batch.stop - batch.start
    return sum(len(stage.group_blocks(g)) for g in range(batch.start, batch.stop))


@dataclass
class Run:
    """A run of stages: what it is (`kind`, `output`, `details` for the summary), its run key
    for events, and its backend's worker count and batch size."""

    kind: str
    output: Any
    details: dict[str, Any]
    num_workers: int = 1
    blocks_per_task: int | None = None
    run_key: str | None = None
    summary: Any = None  # callable(details, counts per stage, seconds, failure) -> markdown


def run_stages(edge: Edge, run: Run, stages: Iterable[Stage]) -> list[Counts]:
    """Run `stages` in order on `edge`: resume (each batch skips its done blocks), progress,
    a log line per stage, one summary and the run's events. Returns each stage's counts."""
    started, failure, results, stages_seen = time.perf_counter(), None, [], []
    stage = None
    try:
        for stage in stages:
            stages_seen.append(stage)
            batches = pending_batches(edge, stage, run.num_workers, run.blocks_per_task)
            counts = run_stage(edge, stage, batches, f"{run.kind} {stage.name}")
            results.append(counts)
            edge.log(
                "%s %s: %d blocks written, %d skipped (empty mask), %d already done, of %d",
                run.kind,
                stage.name,
                counts.written,
                counts.skipped,
                counts.already_done,
                stage.n_blocks,
            )
    except BlocksFailedError as error:
        results.append(error.counts or Counts())
        failure = (
            error.in_stage(stage.name) if len(results) > 1 or stage.name != run.kind else error
        )
        raise failure from None
    except BaseException as error:
        failure = error
        raise
    finally:
        seconds = time.perf_counter() - started
        summary = run.summary(run.details, results, seconds, failure) if run.summary else ""
        figures = {
            "blocks": sum(s.n_blocks for s in stages_seen),
            "written": sum(c.written for c in results),
            "seconds": round(seconds, 3),
        }
        edge.finished(run.kind, run.output, run.run_key, summary, failure, figures)
    return results
