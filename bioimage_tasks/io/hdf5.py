"""HDF5 datasets through h5py, as read-only inputs: `"file.h5/dataset"`,
`"file.hdf5/group/dataset"`.

h5py handles cannot be pickled: the source pickles as its file name and dataset path, and each
process opens the file itself on first read. HDF5 is not an output: h5py serialises every call
behind one global lock and HDF5 files have no safe concurrent writers across processes, so
`refuse_output` stops such a path before any work (write zarr or n5 instead)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property

import h5py
import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.source import Physical

HDF5_PATH = re.compile(r"(.+?\.(?:h5|hdf5|hdf))(?:/(.*))?", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class Hdf5Source:
    """Dataset `dataset` of the HDF5 file `file`; shape, dtype and chunks are read once by
    `open_hdf5`, the file is opened lazily in each process."""

    file: str
    dataset: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None
    physical: Physical
    name: str = "hdf5"

    @property
    def write_unit(self) -> tuple[int, ...] | None:
        return self.chunks

    @property
    def read_unit(self) -> tuple[int, ...] | None:
        """One HDF5 chunk: h5py decompresses whole chunks, so blocks should cover whole ones."""
        return self.chunks

    @cached_property
    def array(self) -> h5py.Dataset:
        """The open dataset (once per process; not pickled)."""
        return h5py.File(self.file, "r")[self.dataset]

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.array[key]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "array"}

    def fingerprint(self) -> dict:
        return {
            "hdf5": os.path.abspath(self.file),
            "dataset": self.dataset,
            "shape": self.shape,
            "dtype": str(self.dtype),
            "chunks": self.chunks,
        }

    def file_signature(self) -> str:
        """Size and mtime_ns of the file: rewriting the file changes it."""
        status = os.stat(self.file)
        return hashlib.blake2b(
            f"{status.st_size}:{status.st_mtime_ns}".encode(), digest_size=8
        ).hexdigest()


def hdf5_path(text: str) -> tuple[str, str] | None:
    """(file, dataset) for 'file.h5/group/dataset' (also .hdf5, .hdf), else None."""
    match = HDF5_PATH.fullmatch(text.rstrip("/"))
    return (match.group(1), match.group(2) or "") if match else None


def open_hdf5(text: str, parameter: str) -> Hdf5Source | None:
    """The dataset `text` names, None when it names no HDF5 file; a clear error for a missing
    file or dataset, or a path that is a group."""
    found = hdf5_path(text)
    if found is None:
        return None
    file, dataset = found
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{parameter}: no HDF5 file at {file!r}")
    with h5py.File(file, "r") as handle:
        node = handle.get(dataset) if dataset else handle
        if not isinstance(node, h5py.Dataset):
            names: list[str] = []
            handle.visititems(
                lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
            )
            what = "is a group" if node is not None else "does not exist"
            raise (ValueError if node is not None else FileNotFoundError)(
                f"{parameter}: {dataset or '/'!r} in {file!r} {what}; its datasets: "
                f"{', '.join(names[:20]) or 'none'} "
                f"(give 'file.h5/<dataset>')"
            )
        return Hdf5Source(
            file,
            node.name.lstrip("/"),
            tuple(node.shape),
            np.dtype(node.dtype),
            tuple(node.chunks) if node.chunks else None,
            element_size(node),
            f"{os.path.basename(file)}/{node.name.lstrip('/')}",
        )


def element_size(dataset: h5py.Dataset) -> Physical:
    """The voxel size in micrometers that ilastik and Fiji store as `element_size_um`, if any."""
    sizes = dataset.attrs.get("element_size_um")
    if sizes is None or len(sizes) != dataset.ndim:
        return Physical()
    return Physical(tuple(float(s) for s in sizes), ("micrometer",) * dataset.ndim)


def refuse_output(text: str, parameter: str) -> None:
    """A ValueError for an HDF5 path given as an output (see the module's docstring)."""
    if hdf5_path(text) is not None:
        raise ParameterError(
            f"{parameter} {text!r} is HDF5: HDF5 is read-only here (h5py writes are not safe from "
            "several workers); write zarr or n5 ('path/out.zarr/key') instead"
        )
