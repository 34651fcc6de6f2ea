"""`copy_flow`: block-wise copy between formats, or persisting a lazy source such as a
ResizedSource. (The module is not named `copy`: Prefect puts flows/ on sys.path when it loads a
deployment's entrypoint, and a flows/copy.py would then shadow the standard library's copy.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bioimage_tasks.blockwise_flow import blockwise_flow
from bioimage_tasks.naming import describe, describe_source, flow_run_namer
from bioimage_tasks.planning import plan_blockwise
from bioimage_tasks.runners import RunnerConfig, backend, check_backend, describe_backend
from bioimage_tasks.io import OutputOptions, StorageOptions, as_source, check_output_options
from bioimage_tasks.tasks import run_plan


@blockwise_flow("copy", flow_run_namer("copy"))
def copy_flow(
    input: Any,
    output: Any = None,
    *,
    block_shape: Sequence[int] | None = None,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    mask: Any = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> Any:
    """Copy `input` (any source, e.g. zarr, n5, numpy or a ResizedSource) into `output` block-wise.

    `output` is created if missing (zarr or n5 by its path) or must match the input's shape and
    hold its dtype; without it a numpy array is returned. `block_shape`, `mask`, `block_ids` and
    `output_options` work as in `downsample_flow`, and so do s3:// URLs with `storage_options`.
    Returns the output array.
    """
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    source = as_source(input, storage_options=storage_options)
    plan = plan_blockwise(
        source, output, mask=mask, block_shape=block_shape, block_ids=block_ids, resume_from=resume_from,
        job_type=job_type, memory_budget=config.memory_budget,
        output_options=options, storage_options=storage_options,
    )
    with backend(job_type, num_workers, config) as runner:
        details = {
            "input": describe_source(input, source),
            "mask": describe(mask) if mask is not None else "none",
            "backend": describe_backend(job_type, num_workers),
        } | ({"output options": options.describe()} if options != OutputOptions() else {})
        return run_plan(runner, plan, num_workers, config, details, "copy")
