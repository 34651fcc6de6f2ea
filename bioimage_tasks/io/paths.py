"""`"path/container.zarr/key"` and `"path/container.n5/key"` strings: where a container ends, and
opening the array inside it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import tensorstore as ts
import zarr

from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.zarr_array import ArraySource
from bioimage_tasks.io.kv import LOCAL_IO

CONTAINER_SUFFIXES = (".zarr", ".n5")


@dataclass(frozen=True)
class ContainerPath:
    """`"data/raw.zarr/volume"` split into container `data/raw.zarr`, key `volume`, format zarr."""

    container: str
    key: str
    format: str  # "zarr" or "n5"

    @classmethod
    def parse(cls, path: str, parameter: str) -> ContainerPath:
        parts = path.rstrip("/").split("/")
        for index, part in enumerate(parts):
            for suffix in CONTAINER_SUFFIXES:
                if part.endswith(suffix) and len(part) > len(suffix):
                    return cls("/".join(parts[: index + 1]) or "/", "/".join(parts[index + 1 :]), suffix[1:])
        raise ValueError(
            f"{parameter} must be 'path/container.zarr/key' or 'path/container.n5/key', got {path!r}"
        )

    def exists(self) -> bool:
        metadata = ("attributes.json",) if self.format == "n5" else ("zarr.json", ".zarray")
        return any(os.path.exists(os.path.join(self.container, self.key, m)) for m in metadata)

    def zarr_format(self) -> int:
        """2 inside an existing zarr v2 container, else 3."""
        return 2 if os.path.exists(os.path.join(self.container, ".zgroup")) else 3

    def open(self, mode: str = "r") -> ArraySource | TensorStoreSource:
        if not self.exists():
            raise FileNotFoundError(f"no {self.format} array at {self.container!r} key {self.key!r}")
        if self.format == "n5":
            return TensorStoreSource(ts.open(self.n5_spec(), open=True, context=LOCAL_IO).result(), str(self))
        return ArraySource(zarr.open_array(store=self.container, path=self.key, mode=mode), str(self))

    def n5_spec(self) -> dict:
        return {"driver": "n5", "kvstore": {"driver": "file", "path": self.container}, "path": self.key}

    def __str__(self) -> str:
        return f"{self.container}/{self.key}" if self.key else self.container
