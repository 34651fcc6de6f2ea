"""Check everything about a block-wise run before any voxel is written: output, block grid,
mask and block ids. A plan creates nothing; `OutputPlan.open()` does, after the checks passed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import os
from typing import Any

import numpy as np

from bioimage_tasks.grid import BlockGrid, check_block_shape, default_block_shape
from bioimage_tasks.outputs import OutputPlan, output_token, plan_output
from bioimage_tasks.records import RECORDS_DIR, BlockRecords, run_key
from bioimage_tasks.sources import ArraySource, Source, TensorStoreSource, as_source


@dataclass(frozen=True, eq=False)
class BlockwisePlan:
    """A checked run: write `source` into `output` over `grid`, blocks `block_ids`, inside `mask`."""

    source: Source
    output: OutputPlan
    grid: BlockGrid
    block_ids: list[int]
    mask: Source | None = None
    explicit_block_ids: bool = False

    def with_source(self, source: Source) -> BlockwisePlan:
        return replace(self, source=source)


def plan_blockwise(
    source: Source,
    output: Any,
    *,
    mask: Any = None,
    block_shape: Sequence[int] | None = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    job_type: str = "local",
) -> BlockwisePlan:
    """Validate a run of `source` into `output`; every error names the parameter at fault.
    Backends other than "local" run in other processes, so they need file-backed data."""
    if block_ids is not None and resume_from is not None:
        raise ValueError("block_ids and resume_from cannot be combined: block_ids re-runs exactly those blocks")
    if resume_from is not None:
        raise NotImplementedError("resume_from is not available yet; re-run with block_ids instead")
    if block_shape is not None:
        block_shape = check_block_shape(block_shape, None, source.shape)
    output_plan = plan_output(output, source.shape, source.dtype, block_shape)
    unit = output_plan.write_unit
    if block_shape is None:
        block_shape = default_block_shape(source.shape, unit)
    else:
        check_block_shape(block_shape, unit, source.shape)
    grid = BlockGrid(source.shape, block_shape)
    mask_source = None
    if mask is not None:
        mask_source = as_source(mask, "mask")
        if mask_source.shape != source.shape:
            raise ValueError(f"mask has shape {mask_source.shape}, expected the output shape {source.shape}")
    ids = list(range(grid.n_blocks)) if block_ids is None else grid.validate_block_ids(block_ids)
    if job_type != "local":
        for name, data in (("input", source), ("mask", mask_source)):
            if data is not None and in_memory(data):
                raise ValueError(f"job_type={job_type!r} needs a file-backed {name} (a zarr/n5 path or array), not numpy")
        if output_plan.existing is None and output_plan.create_at is None or in_memory(output_plan.existing):
            raise ValueError(f"job_type={job_type!r} needs an output (a zarr/n5 path or array), not numpy or None")
    return BlockwisePlan(source, output_plan, grid, ids, mask_source, explicit_block_ids=block_ids is not None)


def in_memory(source: Source | None) -> bool:
    """Whether `source` (or the source it wraps, e.g. a ResizedSource's) is a numpy array."""
    while hasattr(source, "source"):
        source = source.source
    return isinstance(getattr(source, "array", None), np.ndarray)


def block_records(plan: BlockwisePlan, sink: ArraySource | TensorStoreSource) -> BlockRecords | None:
    """The block records of this run in the output's folder, keyed by the source, mask and grid
    and the output's token; None where the output has no folder or a part has no fingerprint."""
    token = output_token(sink)
    fingerprints = [getattr(part, "fingerprint", lambda: None)() for part in (plan.source, plan.mask) if part is not None]
    if token is None or any(f is None for f in fingerprints):
        return None
    key = run_key({"parts": fingerprints, "grid": [plan.grid.shape, plan.grid.block_shape], "output": token})
    return BlockRecords(os.path.join(sink.directory, RECORDS_DIR, "blocks", key))
