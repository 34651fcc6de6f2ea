"""Storage: one module per kind behind the `Source` protocol (object storage: urls, kv), `as_source`
for inputs and `plan_output` for outputs."""

from bioimage_tasks.io.inputs import as_source
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.outputs import OutputPlan, create_array, open_group, output_path, output_token, plan_output
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.kv import KvLocation, LocalLocation, Location
from bioimage_tasks.io.source import Source, check_array, same_storage, start_read, storage_place
from bioimage_tasks.io.urls import StorageOptions, UrlPath
from bioimage_tasks.io.zarr_array import ArraySource

__all__ = [
    "ArraySource", "ContainerPath", "KvLocation", "LocalLocation", "Location", "OutputPlan", "Source", "StorageOptions",
    "TensorStoreSource", "UrlPath", "as_source", "check_array", "create_array", "open_group", "output_path", "output_token",
    "plan_output", "same_storage", "start_read", "storage_place",
]
