"""`"path/container.zarr/key"` and `"path/container.n5/key"` strings: where a container ends, and
opening the array inside it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorstore as ts
import zarr

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.kv import LOCAL_IO
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.zarr_array import ArraySource

CONTAINER_SUFFIXES = (".zarr", ".n5")


@dataclass(frozen=True)
class ContainerPath:
    """`"data/raw.zarr/volume"` split into container `data/raw.zarr`, key `volume`, format zarr."""

    container: str
    key: str
    format: str  # "zarr" or "n5"

    @classmethod
    def parse(cls, path: str, parameter: str) -> ContainerPath:
        """Split `path`, normalised: empty and "." parts are dropped ("./x.zarr//raw" is x.zarr,
        key raw), so one array has one name; ".." inside the container is refused."""
        root = "/" if path.startswith("/") else ""
        parts = [part for part in path.split("/") if part not in ("", ".")]
        for index, part in enumerate(parts):
            for suffix in CONTAINER_SUFFIXES:
                if part.endswith(suffix) and len(part) > len(suffix):
                    container, key = root + "/".join(parts[: index + 1]), parts[index + 1 :]
                    if ".." in key:
                        raise ParameterError(
                            f"{parameter}: '..' inside a container is not a key, got {path!r}"
                        )
                    return cls(container, "/".join(key), suffix[1:])
        raise ParameterError(
            f"{parameter} must be 'path/container.zarr/key' or 'path/container.n5/key', "
            f"got {path!r}"
        )

    def node(self) -> str | None:
        """What is at this path: "array", "group" (zarr or n5 group metadata), "folder" (a folder
        without metadata, such as a bare container), or None (nothing)."""
        folder = os.path.join(self.container, self.key)
        names = ("attributes.json",) if self.format == "n5" else ("zarr.json", ".zarray", ".zgroup")
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb") as file:
                    return node_kind(name, file.read())
            except FileNotFoundError:
                continue
        return "folder" if os.path.isdir(folder) else None

    def exists(self) -> bool:
        metadata = ("attributes.json",) if self.format == "n5" else ("zarr.json", ".zarray")
        return any(os.path.exists(os.path.join(self.container, self.key, m)) for m in metadata)

    def zarr_format(self) -> int:
        """2 inside an existing zarr v2 container, else 3."""
        return 2 if os.path.exists(os.path.join(self.container, ".zgroup")) else 3

    def open(self, mode: str = "r") -> ArraySource | TensorStoreSource:
        if not self.exists():
            raise FileNotFoundError(
                f"no {self.format} array at {self.container!r} key {self.key!r}"
            )
        if self.format == "n5":
            return TensorStoreSource(
                ts.open(self.n5_spec(), open=True, context=LOCAL_IO).result(), str(self)
            )
        return ArraySource(
            zarr.open_array(store=self.container, path=self.key, mode=mode), str(self)
        )

    def n5_spec(self) -> dict:
        return {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": os.path.abspath(self.container)},
            "path": self.key,
        }

    def __str__(self) -> str:
        return f"{self.container}/{self.key}" if self.key else self.container


def node_kind(name: str, data: bytes) -> str:
    """ "array" or "group", by metadata file `name` (zarr.json, .zarray, .zgroup, n5's
    attributes.json, which only an array's has "dimensions" in) and its contents."""
    if name in (".zarray", ".zgroup"):
        return "array" if name == ".zarray" else "group"
    try:
        metadata = json.loads(data)
    except ValueError:
        return "array"  # unreadable metadata: let opening it say what is wrong
    if name == "zarr.json":
        return "group" if metadata.get("node_type") == "group" else "array"
    return "array" if "dimensions" in metadata else "group"
