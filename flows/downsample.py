"""`downsample_flow`: block-wise, exact downsampling of arrays larger than memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bioimage_tasks.blockwise_flow import blockwise_flow
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.naming import describe, describe_source, flow_run_namer
from bioimage_tasks.planning import plan_blockwise
from bioimage_tasks.kernels.window import METHODS as WINDOW_METHODS
from bioimage_tasks.kernels.window import SUPPORTED_DTYPES as WINDOW_DTYPES
from bioimage_tasks.resampling import ResizedSource, WindowedSource, check_anti_aliasing, check_order
from bioimage_tasks.runners import RunnerConfig, backend, check_backend, describe_backend
from bioimage_tasks.io import OutputOptions, StorageOptions, as_source, check_output_options
from bioimage_tasks.tasks import measure_source_range, run_plan

METHODS = ("resize", *WINDOW_METHODS)


def _factor_text(parameters: dict[str, Any]) -> str:
    factor = parameters["scale_factor"]
    return "x" + ("x".join(str(f) for f in factor) if isinstance(factor, Sequence) else str(factor))


def check_method_options(method: str, order: int, anti_aliasing: bool) -> None:
    """Reject an unknown method, an order outside 0-5, and resize options given to a window method."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_order(order)
    check_anti_aliasing(anti_aliasing)
    if method != "resize" and (order != 0 or anti_aliasing):
        raise ValueError(f"order and anti_aliasing apply to method='resize' only, not method={method!r}")


def check_input_dtype(dtype: np.dtype, method: str, order: int, anti_aliasing: bool) -> None:
    """Reject an input dtype the method cannot reduce exactly."""
    dtype = np.dtype(dtype)
    if dtype == bool and (order > 0 or anti_aliasing):
        raise ValueError("a bool input needs order=0 and anti_aliasing=False (interpolation is undefined for bool)")
    if method != "resize" and dtype.kind == "c":
        raise ParameterError(
            f"input has dtype {dtype}, which method={method!r} does not take: the window methods reduce "
            "real numbers (tensorstore's complex mean divides as complex numbers, so an inf or NaN part "
            "turns the other part into NaN). method='resize' resamples the real and imaginary parts; "
            "or downsample the two parts as arrays of their own")
    if method != "resize" and dtype.newbyteorder("=") not in WINDOW_DTYPES:
        supported = sorted(str(d) for d in WINDOW_DTYPES)
        raise ParameterError(f"input has dtype {dtype}: method={method!r} supports {supported} "
                             "(in either byte order), not that one")


@blockwise_flow("downsample", flow_run_namer("downsample", detail=_factor_text))
def downsample_flow(
    input: Any,
    scale_factor: int | Sequence[int],
    output: Any = None,
    *,
    order: int = 0,
    anti_aliasing: bool = False,
    method: str = "resize",
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
    """Downsample `input` by `scale_factor` (an int or one int >= 1 per axis) block-wise.

    The input (numpy, zarr v2/v3, n5, or a path: "path/container.zarr/key", an OME-Zarr image,
    a TIFF file or slice folder, "file.h5/dataset"; see io/inputs.py) is resampled to
    `downscale_shape(shape, factors)` (ceil mode). `method="resize"` does it exactly as
    scikit-image's whole-array `resize(x, shape, order, anti_aliasing, mode="reflect",
    preserve_range=True)` would, cast back to the input dtype (integers rounded to nearest); the
    defaults (order 0, no anti-aliasing) are label-safe: order 0 picks input voxels, never mixes
    them. The window methods "mean", "mode", "min", "max", "median" and "stride" reduce each window
    of `factors` voxels exactly as tensorstore's `downsample` driver does ("mode" is label-safe).

    `output` (array or path; created if missing) receives the result; without it a numpy array
    is returned. `block_shape` is in output space and must be a multiple of the output's chunks
    (default: derived from them). `mask` (output space) limits writes to its nonzero voxels;
    `block_ids` limits the run to those blocks of the output grid. `output_options`
    (`OutputOptions`, or a dict of its fields) choose a new output's codec, level and zarr v3
    shards and whether all-fill chunks are stored. Paths may be "s3://bucket/path/container.zarr/key"
    URLs (or read-only "https://..."); `storage_options` (a StorageOptions or a dict of its fields)
    say how to reach them. Returns the output array.
    """
    check_method_options(method, order, anti_aliasing)
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    source = as_source(input, storage_options=storage_options)
    factors = normalize_factors(scale_factor, len(source.shape))
    check_input_dtype(source.dtype, method, order, anti_aliasing)
    if method == "resize":
        downsampled = ResizedSource(source, downscale_shape(source.shape, factors), order, anti_aliasing)
    else:
        downsampled = WindowedSource(source, factors, method)
    plan = plan_blockwise(
        downsampled, output, mask=mask, block_shape=block_shape, block_ids=block_ids, resume_from=resume_from,
        job_type=job_type, memory_budget=config.memory_budget,
        output_options=options, storage_options=storage_options,
    )
    with backend(job_type, num_workers, config) as runner:
        if isinstance(downsampled, ResizedSource) and downsampled.clips:
            value_range = measure_source_range(runner, source, num_workers, config)
            plan = plan.with_source(replace(downsampled, value_range=value_range))
        details = {
            "input": describe_source(input, source),
            "scale factor": factors,
            "method": f"{method}, order {order}, anti-aliasing {anti_aliasing}",
            "mask": describe(mask) if mask is not None else "none",
            "backend": describe_backend(job_type, num_workers),
        } | ({"output options": options.describe()} if options != OutputOptions() else {})
        return run_plan(runner, plan, num_workers, config, details, "downsample")
