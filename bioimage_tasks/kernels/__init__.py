"""Pure per-block kernels: numpy/scipy math on in-memory blocks, no I/O, no Prefect, no Dask."""

from bioimage_tasks.kernels.masking import merge_masked
from bioimage_tasks.kernels.resize import (
    AxisPlan,
    mirror_indices,
    plan_axis,
    resize_region,
    value_range,
)
from bioimage_tasks.kernels.window import METHODS as WINDOW_METHODS
from bioimage_tasks.kernels.window import window_reduce

__all__ = [
    "WINDOW_METHODS",
    "AxisPlan",
    "merge_masked",
    "mirror_indices",
    "plan_axis",
    "resize_region",
    "value_range",
    "window_reduce",
]
