"""n5 datasets (and any tensorstore array, such as zarr on object storage) through tensorstore, as
sources and sinks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.io.chunk_files import StorageLayout, clear_stale_locks, local_layout
from bioimage_tasks.io.kv import JsonAttributes, LocalLocation, Location


@dataclass(frozen=True, eq=False)
class TensorStoreSource:
    """A tensorstore array (n5 datasets, arrays at URLs); also the sink that writes into it.
    `location` is its folder on object storage (io/urls.py), where attributes and records live."""

    store: ts.TensorStore
    name: str = "tensorstore"
    location: Location | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.store.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.store.dtype.numpy_dtype)

    @property
    def write_unit(self) -> tuple[int, ...] | None:
        return tuple(int(s) for s in self.store.chunk_layout.write_chunk.shape)

    @property
    def array(self) -> ts.TensorStore:
        return self.store

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.start_read(key)()

    def start_read(self, key: tuple[slice, ...]) -> Callable[[], np.ndarray]:
        """Start reading `key`; the returned function waits for the values."""
        return self.store[key].read().result

    def write(self, key: tuple[slice, ...], values: np.ndarray) -> None:
        self.start_write(key, values)()

    def start_write(self, key: tuple[slice, ...], values: np.ndarray) -> Callable[[], None]:
        """Start writing `values` at `key`, once stale lock files of a killed writer are gone
        (io/chunk_files.py); the returned function waits until they are written."""
        clear_stale_locks(self.lock_layout, self.shape, key)
        return self.store[key].write(values).result

    @cached_property
    def lock_layout(self) -> StorageLayout | None:
        """Where tensorstore's writes leave lock files; None off local disk."""
        return local_layout(self)

    @property
    def directory(self) -> str | None:
        """The dataset's folder for file-backed n5, its URL on object storage (None otherwise)."""
        if self.location is not None:
            return self.location.url
        kvstore = self.store.kvstore
        return (
            kvstore.path.rstrip("/")
            if kvstore is not None and kvstore.url.startswith("file://")
            else None
        )

    def fingerprint(self) -> dict:
        return {
            "shape": self.shape,
            "dtype": str(self.dtype),
            "chunks": self.write_unit,
            "n5": self.directory,
        }

    @property
    def attrs(self) -> JsonAttributes | None:
        """The attributes (n5's attributes.json, zarr v2's .zattrs, zarr v3's zarr.json
        "attributes"); None without a folder."""
        folder = self.location or (
            LocalLocation(self.directory) if self.directory is not None else None
        )
        driver = self.store.spec().to_json()["driver"]
        file, member = {"zarr": (".zattrs", None), "zarr3": ("zarr.json", "attributes")}.get(
            driver, ("attributes.json", None)
        )
        return None if folder is None else JsonAttributes(folder, file, member)

    def get_attribute(self, name: str) -> Any:
        attributes = self.attrs
        return None if attributes is None else attributes.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        self.attrs.update({name: value})
