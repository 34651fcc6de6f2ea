"""Check everything about a block-wise run before any voxel is written: output, block grid,
mask and block ids. A plan creates nothing; `OutputPlan.open()` does, after the checks passed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bioimage_tasks.grid import BlockGrid, check_block_shape, default_block_shape
from bioimage_tasks.outputs import OutputPlan, plan_output
from bioimage_tasks.sources import Source, as_source


@dataclass(frozen=True, eq=False)
class BlockwisePlan:
    """A checked run: write `source` into `output` over `grid`, blocks `block_ids`, inside `mask`."""

    source: Source
    output: OutputPlan
    grid: BlockGrid
    block_ids: list[int]
    mask: Source | None = None

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
) -> BlockwisePlan:
    """Validate a run of `source` into `output`; every error names the parameter at fault."""
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
    return BlockwisePlan(source, output_plan, grid, ids, mask_source)
