"""Check everything about a block-wise run before any voxel is written: output, block grid,
mask and block ids. A plan creates nothing; `OutputPlan.open()` does, after the checks passed."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bioimage_tasks.budget import block_bytes
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.grid import BlockGrid, check_block_shape, default_block_shape, fit_to_budget
from bioimage_tasks.io import (
    ArraySource,
    OutputOptions,
    OutputPlan,
    Source,
    StorageOptions,
    TensorStoreSource,
    as_source,
    output_token,
    plan_output,
    same_storage,
    storage_place,
)
from bioimage_tasks.io.source import aligned_unit, read_unit_of
from bioimage_tasks.records import BlockRecords, records_at, run_key


@dataclass(frozen=True, eq=False)
class BlockwisePlan:
    """A checked run: write `source` into `output` over `grid`, blocks `block_ids`, inside
    `mask`."""

    source: Source
    output: OutputPlan
    grid: BlockGrid
    block_ids: list[int] | None  # None: every block
    mask: Source | None = None
    piece_shape: tuple[int, ...] | None = None
    resume_records: str | os.PathLike | None = None

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
    memory_budget: int = 2**30,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> BlockwisePlan:
    """Validate a run of `source` into `output` (stored as `output_options` ask); every error names
    the parameter at fault. Backends other than "local" run in other processes, so they need
    file-backed data (or data on object storage; `storage_options` say how to reach it)."""
    if block_ids is not None and resume_from is not None:
        raise ParameterError(
            "block_ids and resume_from cannot be combined: block_ids re-runs exactly those blocks"
        )
    if block_shape is not None:
        block_shape = check_block_shape(block_shape, source.shape)
    output_plan = plan_output(
        output, source.shape, source.dtype, block_shape, output_options, storage_options
    )
    block_shape, piece_shape = fit_blocks(source, block_shape, output_plan, memory_budget)
    grid = BlockGrid(source.shape, block_shape)
    mask_source = None if mask is None else open_mask(mask, source, storage_options)
    if output_plan.existing is not None and same_storage(source, output_plan.existing):
        raise ParameterError(
            f"output {output!r} is the input: write to another array (a block would read voxels "
            "already overwritten)"
        )
    if resume_from is not None:
        check_resume_from(resume_from, output, output_plan)
    ids = None if block_ids is None else grid.validate_block_ids(block_ids)
    if job_type != "local":
        check_file_backed(job_type, source, mask_source, output_plan)
    return BlockwisePlan(
        source,
        output_plan,
        grid,
        ids,
        mask_source,
        piece_shape,
        resume_records=resume_from
        if isinstance(resume_from, (str, os.PathLike)) and os.path.isdir(resume_from)
        else None,
    )


def fit_blocks(
    source: Source,
    block_shape: Sequence[int] | None,
    output_plan: OutputPlan,
    memory_budget: int,
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The block shape and the piece shape a block is computed in: by default whole write units
    (and the input's strips or tiles), shrinking as the factor grows until a block fits the
    budget; the caller's `block_shape` is kept and computed in pieces where one needs more."""
    fits = functools.partial(block_bytes, source)
    if block_shape is None:
        unit = aligned_unit(output_plan.write_unit, read_unit_of(source), source.shape)
        start = default_block_shape(source.shape, unit)
        return fit_to_budget(start, unit, source.shape, fits, memory_budget)
    return fit_to_budget(block_shape, block_shape, source.shape, fits, memory_budget)


def open_mask(mask: Any, source: Source, storage_options: Any) -> Source:
    """The mask as a source of the output's shape (ParameterError otherwise)."""
    mask_source = as_source(mask, "mask", storage_options)
    if mask_source.shape != source.shape:
        raise ParameterError(
            f"mask has shape {mask_source.shape}, expected the output shape {source.shape}"
        )
    return mask_source


def check_file_backed(
    job_type: str, source: Source, mask: Source | None, output_plan: OutputPlan
) -> None:
    """Backends other than "local" run in other processes: input, mask and output must be
    stored (files or object storage), not numpy arrays of this process."""
    for name, data in (("input", source), ("mask", mask)):
        if data is not None and in_memory(data):
            raise ParameterError(
                f"job_type={job_type!r} needs a file-backed {name} (a zarr/n5 path or array), "
                "not numpy"
            )
    no_output = output_plan.existing is None and output_plan.create_at is None
    if no_output or in_memory(output_plan.existing):
        raise ParameterError(
            f"job_type={job_type!r} needs an output (a zarr/n5 path or array), not numpy or None"
        )


def check_resume_from(resume_from: Any, output: Any, output_plan: OutputPlan) -> None:
    """`resume_from` names the failed run to resume into the same output: its Prefect flow run id,
    or its block-record folder (printed when it failed). Resuming needs that output to exist, and
    a flow run id must be of a run that wrote to this same output."""
    if output_plan.existing is None:
        raise ParameterError(
            f"resume_from={resume_from!r}: the output {output!r} does not exist, there is nothing "
            "to resume"
        )
    if isinstance(resume_from, (str, os.PathLike)) and os.path.isdir(resume_from):
        return  # checked against this run's records once the output's token is read
    try:
        run_id = uuid.UUID(str(resume_from))
    except ValueError:
        raise ParameterError(
            "resume_from must be a Prefect flow run id or a block-record folder, got "
            f"{resume_from!r}"
        ) from None
    from prefect import get_client

    with get_client(sync_client=True) as client:
        try:
            previous = client.read_flow_run(run_id)
        except Exception as error:  # noqa: BLE001 - any lookup failure means we cannot resume it
            raise ParameterError(
                f"resume_from: no flow run {run_id} in the Prefect API ({error})"
            ) from None
    previous_output = previous.parameters.get("output")
    if str(previous_output) != str(output):
        raise ParameterError(
            f"resume_from: flow run {run_id} wrote to {previous_output!r}, not to {output!r}"
        )


def in_memory(source: Source | None) -> bool:
    """Whether `source` (or the source it wraps, e.g. a ResizedSource's) is a numpy array."""
    while hasattr(source, "source"):
        source = source.source
    return isinstance(getattr(source, "array", None), np.ndarray)


def computation_key(plan: BlockwisePlan) -> str | None:
    """What the run computes, whatever output it goes to: the source and mask fingerprints, the
    grid and the output options that change what a rerun writes (`OutputOptions.fingerprint`);
    None when a part has no fingerprint."""
    fingerprints = [
        getattr(part, "fingerprint", lambda: None)()
        for part in (plan.source, plan.mask)
        if part is not None
    ]
    if any(f is None for f in fingerprints):
        return None
    return run_key(
        {"parts": fingerprints, "grid": [plan.grid.shape, plan.grid.block_shape]}
        | plan.output.options.fingerprint()
    )


def block_records(
    plan: BlockwisePlan, sink: ArraySource | TensorStoreSource, epoch: str | None = None
) -> BlockRecords | None:
    """The block records of this run in the output's folder (or prefix on object storage), keyed
    by the computation, the output's token and its ownership `epoch` (lease.claim_ownership); None
    where the output has no folder or a part has no fingerprint."""
    token = output_token(sink)
    computation = computation_key(plan)
    if token is None or computation is None:
        return None
    return records_at(
        storage_place(sink), run_key({"computation": computation, "output": token, "epoch": epoch})
    )
