"""`downsample_flow`: block-wise, exact downsampling of arrays larger than memory (the plain
`bioimage_tasks.downsample` as a Prefect flow)."""

from bioimage_tasks.prefect.flows import downsample_flow

__all__ = ["downsample_flow"]
