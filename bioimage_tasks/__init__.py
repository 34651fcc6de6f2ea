"""bioimage-tasks: block-wise processing of bio-image volumes larger than memory."""

from bioimage_tasks.blockwise import BlocksFailedError
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.resampling import ResizedSource
from bioimage_tasks.runners import RunnerConfig
from bioimage_tasks.io import OutputOptions, as_source

__all__ = ["BlockGrid", "BlocksFailedError", "OutputOptions", "ResizedSource", "RunnerConfig", "as_source",
           "downscale_shape", "normalize_factors"]
