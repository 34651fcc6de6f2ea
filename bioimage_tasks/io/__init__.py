"""Storage: one module per kind behind the `Source` protocol (object storage: urls, kv), `as_source`
for inputs and `plan_output` for outputs."""

from bioimage_tasks.io.bioio_source import MicroscopySource, open_microscopy
from bioimage_tasks.io.hdf5 import Hdf5Source
from bioimage_tasks.io.inputs import as_source
from bioimage_tasks.io.kv import KvLocation, LocalLocation, Location
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.options import OutputOptions, check_output_options
from bioimage_tasks.io.outputs import (
    OutputPlan,
    check_existing_output,
    create_array,
    open_group,
    output_path,
    output_token,
    plan_output,
    with_write_empty_chunks,
)
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.source import (
    Physical,
    Source,
    check_array,
    physical_of,
    same_storage,
    start_read,
    storage_place,
)
from bioimage_tasks.io.tiff import TiffSource
from bioimage_tasks.io.urls import StorageOptions, UrlPath
from bioimage_tasks.io.zarr_array import ArraySource

__all__ = [
    "ArraySource",
    "ContainerPath",
    "Hdf5Source",
    "KvLocation",
    "LocalLocation",
    "Location",
    "OutputOptions",
    "OutputPlan",
    "Physical",
    "Source",
    "StorageOptions",
    "TensorStoreSource",
    "TiffSource",
    "UrlPath",
    "as_source",
    "check_array",
    "check_existing_output",
    "check_output_options",
    "create_array",
    "open_group",
    "output_path",
    "output_token",
    "physical_of",
    "plan_output",
    "same_storage",
    "start_read",
    "storage_place",
    "with_write_empty_chunks",
    "MicroscopySource",
    "open_microscopy",
]
