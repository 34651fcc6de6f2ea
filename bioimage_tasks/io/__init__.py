"""Storage: one module per kind behind the `Source` protocol, `as_source` for inputs and
`plan_output` for outputs."""

from bioimage_tasks.io.inputs import as_source
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.options import OutputOptions, check_output_options
from bioimage_tasks.io.outputs import (OutputPlan, check_existing_output, create_array, output_token, plan_output,
                                       with_write_empty_chunks)
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.hdf5 import Hdf5Source
from bioimage_tasks.io.source import Physical, Source, check_array, physical_of, same_storage, start_read
from bioimage_tasks.io.tiff import TiffSource
from bioimage_tasks.io.zarr_array import ArraySource

__all__ = [
    "ArraySource", "ContainerPath", "Hdf5Source", "OutputOptions", "OutputPlan", "Physical", "Source",
    "TensorStoreSource", "TiffSource", "as_source", "check_array", "check_existing_output", "check_output_options",
    "create_array", "output_token", "physical_of", "plan_output", "same_storage", "start_read",
    "with_write_empty_chunks",
]
