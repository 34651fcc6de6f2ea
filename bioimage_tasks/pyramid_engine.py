"""The pyramid's stages for the one engine (engine.py): window methods read each base region
once (`PyramidJob`: s0 and every level from that read, see pyramid_plan.py), then copy the
staged deep levels into their own chunks; `resize` computes each level from the base as
scikit-image would. Every stage resumes through block records like any run."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bioimage_tasks.blockwise import BlockJob, StartWrite
from bioimage_tasks.budget import block_bytes
from bioimage_tasks.chunk_manifest import StampedSink
from bioimage_tasks.engine import Counts, Stage
from bioimage_tasks.grid import BlockGrid, default_block_shape, fit_to_budget
from bioimage_tasks.io import (
    ArraySource,
    Location,
    Source,
    TensorStoreSource,
    output_token,
    start_read,
    storage_place,
)
from bioimage_tasks.io.encoded_chunks import Encoded, EncodedCopy, encoded_copy
from bioimage_tasks.kernels.pyramid import pyramid_levels
from bioimage_tasks.pyramid_plan import PyramidPlan
from bioimage_tasks.records import BlockRecords, records_at, run_key
from bioimage_tasks.resampling import ResizedSource
from bioimage_tasks.throttle import ThrottledSink

Sink = ArraySource | TensorStoreSource


@dataclass(frozen=True, eq=False)
class PyramidJob:
    """Base regions of `plan` into every level at once: each tile of a region is read once and
    written to `sinks[k]` for every level k (s0 included, unless its sink is None: an existing
    s0); staged levels' sinks are their staging arrays."""

    source: Source
    plan: PyramidPlan
    method: str
    sinks: tuple[Sink | None, ...]
    records: BlockRecords | None = None
    s0_files: EncodedCopy | ThrottledSink | None = (
        None  # s0 as a copy of the input's files (io/encoded_chunks.py)
    )

    @property
    def grid(self) -> BlockGrid:
        return self.plan.grid

    def prefetch(self, region_id: int) -> Callable[[], tuple[np.ndarray, Encoded | None]]:
        return self.start_read(self.plan.tiles(region_id)[0])

    def start_read(
        self, tile: tuple[slice, ...]
    ) -> Callable[[], tuple[np.ndarray, Encoded | None]]:
        """Start reading `tile`: its values, and its storage files where s0 copies them."""
        if self.s0_files is not None and self.s0_files.covers_whole_files(tile):
            return self.s0_files.start_read(tile)
        reading = start_read(self.source, tile)
        return lambda: (np.asarray(reading()), None)

    def run_block(
        self,
        region_id: int,
        prefetched: Callable[[], np.ndarray] | None,
        write: Callable[[StartWrite], None],
    ) -> int:
        """Compute and write region `region_id` tile by tile, reading the next tile meanwhile."""
        tiles = self.plan.tiles(region_id)
        reading, voxels = prefetched, 0
        for index, tile in enumerate(tiles):
            data, encoded = (reading or self.start_read(tile))()
            reading = self.start_read(tiles[index + 1]) if index + 1 < len(tiles) else None
            levels = [
                data,
                *pyramid_levels(data, self.plan.level_factors, self.method, self.source.shape),
            ]
            writes = [
                (sink, self.plan.level_key(level, tile), values)
                for level, (sink, values) in enumerate(zip(self.sinks, levels))
                if sink is not None
            ]
            if encoded is not None:  # s0: the input's files as they are
                writes[0] = (self.s0_files, tile, encoded)
            write(functools.partial(start_writes, writes))
            voxels += data.size
        return voxels

    def written_regions(self, region_id: int) -> list[tuple[Sink, tuple[slice, ...]]]:
        """Where region `region_id` writes: its part of s0 and of every level (or staging array)."""
        base = self.plan.grid.block_slices(region_id)
        return [
            (sink, self.plan.level_key(level, base))
            for level, sink in enumerate(self.sinks)
            if sink is not None
        ]


def start_writes(
    writes: Sequence[tuple[Sink, tuple[slice, ...], np.ndarray]],
) -> Callable[[], None]:
    """Start every write; the returned function waits for all of them and raises the first error."""
    started = [sink.start_write(key, values) for sink, key, values in writes]

    def finish() -> None:
        errors = []
        for done in started:
            try:
                done()
            except Exception as error:  # noqa: BLE001 - every write is awaited before one is raised
                errors.append(error)
        if errors:
            raise errors[0]

    return finish


@dataclass
class LevelRow:
    """One level of the summary: what it is, how it was written, what happened to its blocks."""

    level: int
    shape: tuple[int, ...]
    write_unit: tuple[int, ...] | None
    factors: tuple[int, ...]
    how: str
    blocks: int = 0
    written: int = 0
    already_done: int = 0

    def cells(self) -> list[str]:
        return [
            f"s{self.level}",
            str(self.shape),
            str(self.write_unit),
            str(self.factors),
            self.how,
            f"{self.written} written, {self.already_done} already done of {self.blocks}",
        ]


def records_in(place: Any, fingerprint: dict[str, Any]) -> BlockRecords:
    """The block records of a computation (`fingerprint`) kept at `place` (a folder, a Location,
    or an array whose storage place it is)."""
    return records_at(
        place if isinstance(place, (str, Location)) else storage_place(place), run_key(fingerprint)
    )


def pyramid_stages(
    source: Source,
    plan: PyramidPlan,
    method: str,
    sinks: Sequence[Sink | None],
    staging: dict[int, Sink],
    group_directory: str | Location,
    epoch: str,
    rows: list[LevelRow],
) -> list[Stage]:
    """The regions stage and one copy stage per staged level, with their records under the
    outputs' ownership `epoch` (none where the input has no fingerprint)."""
    writers = tuple(staging.get(level, sink) for level, sink in enumerate(sinks))
    tokens = [output_token(sink) if sink is not None else None for sink in writers]
    fingerprint = getattr(source, "fingerprint", lambda: None)()
    keep_records = fingerprint is not None
    records = (
        records_in(
            group_directory,
            {
                "pyramid": method,
                "factors": plan.level_factors,
                "region": plan.region,
                "input": fingerprint,
                "outputs": tokens,
                "epoch": epoch,
            },
        )
        if keep_records
        else None
    )
    direct = [row for row in rows if row.level not in staging and sinks[row.level] is not None]
    stages = [
        Stage(
            "regions",
            PyramidJob(source, plan, method, writers, records, s0_copy(source, writers[0])),
            rows=tuple(direct),
        )
    ]
    for level, stage_sink in staging.items():
        sink = sinks[level]
        grid = BlockGrid(sink.shape, default_block_shape(sink.shape, sink.write_unit))
        level_records = (
            records_in(
                sink,
                {
                    "parts": [stage_sink.fingerprint(), output_token(stage_sink)],
                    "grid": [grid.shape, grid.block_shape],
                    "output": output_token(sink),
                    "epoch": epoch,
                },
            )
            if keep_records
            else None
        )
        job = BlockJob(stage_sink, sink, grid, records=level_records)
        # regions rewritten since change the staging chunks a block reads: its signature (and so
        # its record and cache key) sees that, and the block is copied again
        stages.append(Stage(f"s{level}", job, sink.write_unit, rows=(rows[level],)))
    return stages


def s0_copy(source: Source, sink: Sink | None) -> EncodedCopy | ThrottledSink | StampedSink | None:
    """s0 as a copy of the input's storage files where both store them alike (throttled and
    stamped like s0)."""
    if isinstance(sink, (ThrottledSink, StampedSink)):
        copy = s0_copy(source, sink.inner)
        return None if copy is None else replace(sink, inner=copy)
    return encoded_copy(source, sink)


def resize_stages(
    source: Source,
    shapes: Sequence[tuple[int, ...]],
    order: int,
    anti_aliasing: bool,
    value_range: tuple[float, float] | None,
    sinks: Sequence[Sink | None],
    budget: int,
    epoch: str,
    rows: list[LevelRow],
) -> list[Stage]:
    """`method="resize"`: s0 copied, then each level resized from the base as scikit-image's
    `resize` of the whole base would (levels of a B-spline with a Gaussian do not chain
    exactly); each level's blocks fit `budget`."""
    stages = []
    fingerprint = getattr(source, "fingerprint", lambda: None)()
    for level, sink in enumerate(sinks):
        if sink is None:
            continue
        view = (
            source
            if level == 0
            else ResizedSource(source, shapes[level], order, anti_aliasing, value_range)
        )
        block, piece = fit_to_budget(
            default_block_shape(sink.shape, sink.write_unit),
            sink.write_unit,
            sink.shape,
            functools.partial(block_bytes, view),
            budget,
        )
        grid = BlockGrid(sink.shape, block)
        records = None
        if fingerprint is not None and sink.directory is not None:
            records = records_in(
                sink,
                {
                    "parts": [view.fingerprint() if level else fingerprint],
                    "grid": [grid.shape, grid.block_shape],
                    "output": output_token(sink),
                    "epoch": epoch,
                },
            )
        stages.append(
            Stage(
                f"s{level}",
                BlockJob(view, sink, grid, None, records, piece),
                sink.write_unit,
                rows=(rows[level],),
            )
        )
    return stages


@dataclass(frozen=True)
class GroupOutput:
    """The pyramid's output as its events name it: the OME-Zarr group."""

    name: str
    directory: str


def pyramid_summary(rows: list[LevelRow], stages: Sequence[Stage]) -> Callable[..., str]:
    """The end-of-run summary: the parameters, then a row per level (filled from each stage's
    counts: the levels a stage completes share its counts)."""

    def summary(
        details: dict[str, Any], results: list[Counts], seconds: float, failure: Any
    ) -> str:
        for stage, counts in zip(stages, results):
            for row in stage.rows:
                row.blocks, row.written, row.already_done = (
                    stage.n_blocks,
                    counts.written,
                    counts.already_done,
                )
        return level_table(details, rows, seconds, failure)

    return summary


def level_table(details: dict[str, Any], rows: list[LevelRow], seconds: float, failure: Any) -> str:
    """The parameters, wall time and failures, then a row per level."""
    lines = [
        "| | |",
        "|---|---|",
        *(f"| {name} | `{value}` |" for name, value in details.items()),
        f"| wall time | {seconds:.2f} s |",
        f"| failed blocks | {getattr(failure, 'n_failed', 0)} |",
        "",
        "| level | shape | chunks (shards) | factor from s0 | written | blocks |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    voxels = sum(math.prod(row.shape) for row in rows)
    lines.append(f"\n{voxels:,} voxels in {len(rows)} levels")
    return "\n".join(lines)
