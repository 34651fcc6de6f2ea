"""bioimage-tasks: block-wise processing of bio-image volumes larger than memory.

The plain API (`downsample`, `copy`, `pyramid`, `convert`) runs without Prefect; the flows
(`flows/`) run the same operations as Prefect flow runs. Importing this package loads no Prefect
module."""

from bioimage_tasks.api import copy, downsample, pyramid
from bioimage_tasks.convert import ConvertReport, convert
from bioimage_tasks.errors import (
    BioimageTasksError,
    BlocksFailedError,
    ParameterError,
    StorageError,
)
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.io import OutputOptions, as_source
from bioimage_tasks.resampling import ResizedSource
from bioimage_tasks.runners import DaskConfig, LocalClusterConfig, RunnerConfig, SlurmConfig

__all__ = [
    "BioimageTasksError",
    "BlockGrid",
    "BlocksFailedError",
    "ConvertReport",
    "DaskConfig",
    "LocalClusterConfig",
    "OutputOptions",
    "ParameterError",
    "ResizedSource",
    "RunnerConfig",
    "SlurmConfig",
    "StorageError",
    "as_source",
    "convert",
    "copy",
    "downsample",
    "downscale_shape",
    "normalize_factors",
    "pyramid",
]
