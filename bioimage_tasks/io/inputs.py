"""The one place that turns what a caller passes as input (an array object, a path or a URL) into
a checked `Source`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.source import Source, check_array
from bioimage_tasks.io.urls import StorageOptions, UrlPath, is_url
from bioimage_tasks.io.zarr_array import ArraySource, describe


def as_source(data: Any, parameter: str = "input", storage_options: StorageOptions | dict | None = None) -> Source:
    """Wrap `data` (numpy array, zarr array, tensorstore, path or URL string, or a Source) as a
    Source, checked by `check_array`; a path or URL that does not exist raises FileNotFoundError
    naming `parameter`. `storage_options` say how to reach object storage (io/urls.py)."""
    if is_url(data):
        try:
            return check_array(UrlPath.parse(data, parameter, storage_options).open("r"), parameter)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(error if str(error).startswith(parameter) else f"{parameter}: {error}") from None
    if isinstance(data, (str, os.PathLike)):
        path = ContainerPath.parse(os.fspath(data), parameter)
        try:
            return check_array(path.open("r"), parameter)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{parameter}: {error}") from None
    if isinstance(data, Source):
        return check_array(data, parameter)
    if isinstance(data, ts.TensorStore):
        return check_array(TensorStoreSource(data), parameter)
    if isinstance(data, (np.ndarray, zarr.Array)):
        return check_array(ArraySource(data, describe(data)), parameter)
    raise TypeError(
        f"{parameter} must be a numpy array, a zarr array, a tensorstore, or a "
        f"'path/container.zarr/key' or 's3://bucket/path/container.zarr/key' string, got {type(data).__name__}"
    )
