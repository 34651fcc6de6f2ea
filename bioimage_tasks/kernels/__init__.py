"""Pure per-block kernels: numpy/scipy math on in-memory blocks, no I/O, no Prefect, no Dask."""

from bioimage_tasks.kernels.masking import merge_masked
from bioimage_tasks.kernels.resize import AxisPlan, mirror_indices, plan_axis, resize_region, value_range

__all__ = ["AxisPlan", "merge_masked", "mirror_indices", "plan_axis", "resize_region", "value_range"]
