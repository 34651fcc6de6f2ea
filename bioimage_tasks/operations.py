"""Operations as declarations for the one engine, and `execute`, which runs any of them: hold
the outputs' lease, claim them for the computation, run the stages, finish (metadata).

`BlockwiseOperation` is a downsample or a copy: one stage writing `source` into `output`. The
pyramid (pyramid_op.py) is several stages. Both are Prefect-free; the plain API (api.py) and
the flows run them on their own edge."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Protocol

from bioimage_tasks.blockwise import BlockJob, blocks_done
from bioimage_tasks.chunk_manifest import stamp_writes
from bioimage_tasks.engine import Counts, Run, Stage, plan_batches, run_stages
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.grid import BlockGrid, default_block_shape
from bioimage_tasks.io import Source, storage_place
from bioimage_tasks.lease import claim_ownership, output_lease, owned_epoch
from bioimage_tasks.planning import BlockwisePlan, block_records, computation_key
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.resampling import ResizedSource, combine_ranges, measure_value_range
from bioimage_tasks.run_call import record_call
from bioimage_tasks.runners import RunnerConfig
from bioimage_tasks.signatures import job_signatures
from bioimage_tasks.throttle import throttle_writes


class Operation(Protocol):
    """What `execute` runs. `places` are the outputs to lease (none: in memory)."""

    kind: str
    job_type: str
    config: RunnerConfig
    num_workers: int

    def prepare(self, edge: Any) -> None:
        """Work that needs the backend before planning stages (e.g. measuring a value range)."""

    def places(self) -> list[Any]: ...

    def computation(self) -> str: ...

    def stages(self, epoch: str | None) -> list[Stage]:
        """The stages, their records keyed by the outputs' ownership `epoch`."""

    def check_records(self, epoch: str | None) -> None:
        """Refuse a `resume_from` that names records other than this computation's."""

    def run(self) -> Run:
        """What the run is, for the summary and events (after `stages`)."""

    def complete(self) -> Any:
        """Finish (e.g. write metadata) and return the result."""


def execute(operation: Operation, edge: Any) -> Any:
    """Run `operation` on `edge`: a rerun of a finished run writes nothing, not even a lease;
    otherwise hold the outputs' lease (a live run of another computation is refused before
    anything is written), claim them (records of another computation stop counting), run."""
    operation.prepare(edge)
    places = operation.places()
    if not places:
        stages = operation.stages(None)
        run_stages(edge, operation.run(), stages)
        return operation.complete()
    computation = operation.computation()
    epoch = owned_epoch(places, computation)
    if epoch is not None and all_done(operation.stages(epoch), operation):
        edge.log(
            "%s: every block is recorded done with today's input; nothing to write", operation.kind
        )
        return operation.complete()
    with output_lease(places, computation):
        operation.check_records(owned_epoch(places, computation))
        stages = operation.stages(claim_ownership(places, computation))
        record_call(
            places[0], operation.kind, getattr(operation, "call", None)
        )  # for verify --repair
        for stage in stages:
            if getattr(stage, "rewrite", False) and stage.job.records is not None:
                stage.job.records.forget(stage.block_ids)  # explicitly chosen blocks are rewritten
        run_stages(edge, operation.run(), stages)
    return operation.complete()


def all_done(stages: Sequence[Stage], operation: Operation) -> bool:
    """Whether every block of every stage is recorded done from today's input (read batch by
    batch, stopping at the first block that is not: bounded memory, quick on a new run)."""
    return all(
        batch_done(stage, batch)
        for stage in stages
        for batch in plan_batches(stage, operation.num_workers, operation.config.blocks_per_task)
    )


def batch_done(stage: Stage, batch: Any) -> bool:
    """Whether every block of `batch` is recorded done, from input with today's signature. The
    input is looked at only once every block has a record: a first run reads no signature."""
    records = stage.job.records
    if records is None or getattr(stage, "rewrite", False):
        return False
    for block_ids in stage.batch_blocks(batch):
        if len(records.recorded(block_ids)) < len(block_ids):
            return False
        if len(blocks_done(stage.job, block_ids, job_signatures(stage.job, block_ids))) < len(
            block_ids
        ):
            return False
    return True


def measure_range(edge: Any, source: Source, num_workers: int) -> tuple[float, float]:
    """The whole source's (min, max), measured in parallel batches on `edge`."""
    grid = BlockGrid(source.shape, default_block_shape(source.shape, source.write_unit))
    stage = Stage("range", SimpleNamespace(grid=grid))  # batches need only the grid
    calls = [(source, range(b.start, b.stop)) for b in plan_batches(stage, num_workers)]
    return combine_ranges(edge.map(measure_value_range, calls))


@dataclass(eq=False)
class BlockwiseOperation:
    """Write `plan.source` into `plan.output` over `plan.grid` (a downsample or a copy)."""

    kind: str
    plan: BlockwisePlan
    config: RunnerConfig
    num_workers: int
    details: dict[str, Any]
    job_type: str = "local"
    sink: Any = None
    run_key: str | None = None
    _records: dict[str | None, BlockRecords | None] = field(default_factory=dict)

    def prepare(self, edge: Any) -> None:
        source = self.plan.source
        if isinstance(source, ResizedSource) and source.clips:
            value_range = measure_range(edge, source.source, self.num_workers)
            self.plan = self.plan.with_source(replace(source, value_range=value_range))
        self.sink = self.plan.output.open()

    def places(self) -> list[Any]:
        place = storage_place(self.sink)
        return [] if place is None else [place]

    def computation(self) -> str:
        return computation_key(self.plan) or f"unkeyed-{uuid.uuid4().hex}"  # joined by no other run

    def records(self, epoch: str | None) -> BlockRecords | None:
        if epoch not in self._records:
            self._records[epoch] = (
                None if epoch is None else block_records(self.plan, self.sink, epoch)
            )
        return self._records[epoch]

    def check_records(self, epoch: str | None) -> None:
        """`resume_from=<record folder>` must name this computation's current records (checked
        before a claim of the output could drop them)."""
        resume = self.plan.resume_records
        records = self.records(epoch)
        if resume is not None and (records is None or os.path.abspath(resume) != records.directory):
            raise ParameterError(
                f"resume_from={str(resume)!r} holds the records of another computation; "
                "this call's records are "
                f"{records.url if records else 'not kept (output in memory)'}"
            )

    def stages(self, epoch: str | None) -> list[Stage]:
        plan, records = self.plan, self.records(epoch)
        self.run_key = records.key if records is not None else None
        ids = None if plan.block_ids is None else tuple(plan.block_ids)
        sink = throttle_writes(stamp_writes(self.sink), self.config.write_limit)
        job = BlockJob(plan.source, sink, plan.grid, plan.mask, records, plan.piece_shape)
        return [ExplicitStage(self.kind, job, self.plan.output.write_unit, ids)]

    def run(self) -> Run:
        grid = self.plan.grid
        details = self.details | {
            "output": f"{getattr(self.sink, 'name', 'output')} {self.sink.shape} {self.sink.dtype} "
            f"chunks {self.sink.write_unit}",
            "grid": f"{grid.n_blocks} blocks of {grid.block_shape}",
        }
        return Run(
            self.kind,
            self.sink,
            details,
            self.num_workers,
            self.config.blocks_per_task,
            self.run_key,
            blockwise_summary(self.planned_voxels()),
        )

    def planned_voxels(self) -> int:
        grid, ids = self.plan.grid, self.plan.block_ids
        if ids is None:
            return math.prod(grid.shape)
        return sum(math.prod(s.stop - s.start for s in grid.block_slices(b)) for b in ids)

    def complete(self) -> Any:
        return self.sink.array


@dataclass(frozen=True, eq=False)
class ExplicitStage(Stage):
    """A stage whose `block_ids`, when given, are rewritten even when recorded done."""

    @property
    def rewrite(self) -> bool:
        return self.block_ids is not None


def blockwise_summary(voxels: int) -> Callable[[dict[str, Any], list[Counts], float, Any], str]:
    """The summary of a one-stage run: the parameters, what happened to the blocks, how fast."""

    def summary(
        details: dict[str, Any], results: list[Counts], seconds: float, failure: Any
    ) -> str:
        counts = Counts()
        for result in results:
            counts.add(result)
        rows = [(name, f"`{value}`") for name, value in details.items()] + [
            ("blocks written", counts.written),
            ("blocks skipped (empty mask)", counts.skipped),
            ("blocks already done before this run", counts.already_done),
            ("blocks failed", getattr(failure, "n_failed", counts.failed)),
            ("voxels written", f"{counts.voxels:,}"),
            ("wall time", f"{seconds:.2f} s"),
            (
                "throughput",
                f"{voxels / max(seconds, 1e-9) / 1e6:.1f} M output voxels/s (planned blocks)",
            ),
            ("ran on", ", ".join(sorted(counts.executors)) or "nothing"),
        ]
        return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])

    return summary
