"""n5 datasets (and any tensorstore array) through tensorstore, as sources and sinks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts


@dataclass(frozen=True, eq=False)
class TensorStoreSource:
    """A tensorstore array (n5 datasets); also the sink that writes into it."""

    store: ts.TensorStore
    name: str = "tensorstore"

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
        """Start writing `values` at `key`; the returned function waits until they are written."""
        return self.store[key].write(values).result

    @property
    def directory(self) -> str | None:
        """The dataset's folder for file-backed n5 (None otherwise)."""
        kvstore = self.store.kvstore
        return kvstore.path.rstrip("/") if kvstore is not None and kvstore.url.startswith("file://") else None

    def fingerprint(self) -> dict:
        return {"shape": self.shape, "dtype": str(self.dtype), "chunks": self.write_unit, "n5": self.directory}

    def _attributes_file(self) -> str:
        return os.path.join(self.directory, "attributes.json")

    def get_attribute(self, name: str) -> Any:
        if self.directory is None:
            return None
        with open(self._attributes_file()) as stream:
            return json.load(stream).get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        with open(self._attributes_file()) as stream:
            attributes = json.load(stream)
        attributes[name] = value
        with open(self._attributes_file(), "w") as stream:
            json.dump(attributes, stream)
