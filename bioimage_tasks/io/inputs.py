"""The one place that turns what a caller passes as input (an array object, a path or a URL) into
a checked `Source`: TIFF files and slice folders (io/tiff.py), HDF5 datasets (io/hdf5.py),
microscopy files (io/bioio_source.py), OME-Zarr images (io/ome_zarr.py), zarr and n5 arrays
(io/paths.py)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from bioimage_tasks.errors import ParameterError, StorageError
from bioimage_tasks.io.bioio_source import open_microscopy
from bioimage_tasks.io.hdf5 import open_hdf5, refuse_output
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.ome_zarr import open_ome_zarr
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.precomputed import open_precomputed
from bioimage_tasks.io.source import Source, check_array
from bioimage_tasks.io.tiff import open_tiff, tiff_files
from bioimage_tasks.io.urls import StorageOptions, UrlPath, is_url
from bioimage_tasks.io.zarr_array import ArraySource, describe


def as_source(
    data: Any, parameter: str = "input", storage_options: StorageOptions | dict | None = None
) -> Source:
    """Wrap `data` (numpy array, zarr array, tensorstore, path or URL string, or a Source) as a
    Source, checked by `check_array`; a path or URL that does not exist raises FileNotFoundError
    naming `parameter`. `storage_options` say how to reach object storage (io/urls.py)."""
    precomputed = open_precomputed(data, parameter, storage_options)  # io/precomputed.py
    if precomputed is not None:
        return check_array(precomputed, parameter)
    if is_url(data):
        try:
            return check_array(UrlPath.parse(data, parameter, storage_options).open("r"), parameter)
        except (FileNotFoundError, ValueError, StorageError) as error:
            raise type(error)(
                error if str(error).startswith(parameter) else f"{parameter}: {error}"
            ) from None
    if isinstance(data, (str, os.PathLike)):
        return check_array(open_path(os.fspath(data), parameter), parameter)
    if isinstance(data, Source):
        return check_array(data, parameter)
    if isinstance(data, ts.TensorStore):
        return check_array(TensorStoreSource(data), parameter)
    if isinstance(data, (np.ndarray, zarr.Array)):
        return check_array(ArraySource(data, describe(data)), parameter)
    raise TypeError(
        f"{parameter} must be a numpy array, a zarr array, a tensorstore, or a path or URL "
        "('path/container.zarr/key', '.n5/key', 's3://bucket/path/container.zarr/key', "
        "'image.ome.zarr', 'stack.tif', 'slices/*.tif', "
        f"'file.h5/dataset', 'file.czi/<scene>', 'precomputed://folder'), got {type(data).__name__}"
    )


def open_path(text: str, parameter: str) -> Source:
    """The source a path names, by its kind: TIFF, HDF5, a microscopy file (CZI, ND2, LIF, or
    any file a bioio plugin reads), OME-Zarr image, zarr or n5 array."""
    source = (
        open_tiff(text, parameter)
        or open_hdf5(text, parameter)
        or open_microscopy(text, parameter, force=False)
    )
    if source is not None:
        return source
    path = ContainerPath.parse(text, parameter)
    try:
        return open_ome_zarr(path, parameter) or path.open("r")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{parameter}: {error}") from None


def refuse_input_only(output: Any, parameter: str = "output") -> None:
    """A ValueError for an output path of a kind we only read (TIFF, HDF5), before any work."""
    if isinstance(output, (str, os.PathLike)):
        text = os.fspath(output)
        refuse_output(text, parameter)
        if not text.rstrip("/").endswith((".zarr", ".n5")) and tiff_files(text) is not None:
            raise ParameterError(
                f"{parameter} {text!r} is TIFF: TIFF is an input format here; write zarr or n5 "
                "('path/out.zarr/key') and convert with copy_flow or pyramid_flow"
            )
