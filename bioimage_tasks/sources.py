"""Array sources and sinks behind one small interface: numpy arrays, zarr v2/v3 arrays (zarr-python)
and n5 datasets (tensorstore), addressed as objects or as `"path/container.zarr/key"` strings."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tensorstore as ts
import zarr

CONTAINER_SUFFIXES = (".zarr", ".n5")


@runtime_checkable
class Source(Protocol):
    """Anything block-wise code reads from: a shape, a dtype, numpy-style slicing (with positive
    steps), and the unit a writer must own whole (chunk or shard; None for in-memory arrays)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def write_unit(self) -> tuple[int, ...] | None: ...

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class ArraySource:
    """A numpy or zarr array (anything with numpy slicing); also the sink that writes into it."""

    array: Any
    name: str = "array"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def write_unit(self) -> tuple[int, ...] | None:
        shards = getattr(self.array, "shards", None)
        chunks = shards or getattr(self.array, "chunks", None)
        return tuple(chunks) if chunks is not None else None

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.start_read(key)()

    def start_read(self, key: tuple[slice, ...]) -> Callable[[], np.ndarray]:
        """Start reading `key`; the returned function waits for the values. Only tensorstore
        reads run in the background."""
        if self.fast_io is not None:
            return self.fast_io[key].read().result
        values = np.asarray(self.array[key])
        return lambda: values

    def write(self, key: tuple[slice, ...], values: np.ndarray) -> None:
        self.start_write(key, values)()

    def start_write(self, key: tuple[slice, ...], values: np.ndarray) -> Callable[[], None]:
        """Start writing `values` at `key`; the returned function waits until they are written
        (raising the write's error). Only tensorstore writes run in the background."""
        if self.fast_io is not None:
            return self.fast_io[key].write(values).result
        self.array[key] = values
        return lambda: None

    @cached_property
    def fast_io(self) -> ts.TensorStore | None:
        """A tensorstore handle on this zarr array on disk, which reads 2-3x and writes ~1.4x faster
        than zarr-python (measured, benchmarks/); None for numpy, other stores, or metadata
        tensorstore cannot open (codecs it lacks), where zarr-python does the I/O. Opened once per
        process: it is not pickled."""
        if not isinstance(self.array, zarr.Array) or not isinstance(self.array.store, zarr.storage.LocalStore):
            return None
        driver = "zarr3" if self.array.metadata.zarr_format == 3 else "zarr"
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": self.directory}}
        try:
            store = ts.open(spec, open=True, read=True, write=not self.array.read_only).result()
        except ValueError:
            return None
        if tuple(store.shape) != self.shape or np.dtype(store.dtype.numpy_dtype) != self.dtype:
            return None
        return store

    def __getstate__(self) -> dict:
        return {name: value for name, value in self.__dict__.items() if name != "fast_io"}

    @property
    def directory(self) -> str | None:
        """The array's folder on the local file system (None in memory or on other stores)."""
        root = getattr(getattr(self.array, "store", None), "root", None)
        return os.path.join(str(root), self.array.path) if root is not None else None

    def fingerprint(self) -> dict:
        """What identifies this data: its location and metadata (numpy: shape and dtype; its
        content is in each block's signature, signatures.py, so a change recomputes only the
        blocks it touches)."""
        identity = {"shape": self.shape, "dtype": str(self.dtype), "chunks": self.write_unit}
        if isinstance(self.array, np.ndarray):
            return identity | {"numpy": True}
        return identity | {"zarr": self.directory or repr(self.array.store)}

    def get_attribute(self, name: str) -> Any:
        return None if isinstance(self.array, np.ndarray) else self.array.attrs.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        self.array.attrs[name] = value


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


def start_read(source: Source, key: tuple[slice, ...]) -> Callable[[], np.ndarray]:
    """Start reading `key` from `source` in the background where the source can (a
    `start_read` method), else read it now; the returned function gives the values."""
    start = getattr(source, "start_read", None)
    if start is not None:
        return start(key)
    values = source[key]
    return lambda: values


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
            return TensorStoreSource(ts.open(self.n5_spec(), open=True).result(), str(self))
        return ArraySource(zarr.open_array(store=self.container, path=self.key, mode=mode), str(self))

    def n5_spec(self) -> dict:
        return {"driver": "n5", "kvstore": {"driver": "file", "path": self.container}, "path": self.key}

    def __str__(self) -> str:
        return f"{self.container}/{self.key}" if self.key else self.container


def as_source(data: Any, parameter: str = "input") -> Source:
    """Wrap `data` (numpy array, zarr array, tensorstore, path string or a Source) as a Source,
    checked by `check_array`; a path that does not exist raises FileNotFoundError naming
    `parameter`."""
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
        return check_array(ArraySource(data, _describe(data)), parameter)
    raise TypeError(
        f"{parameter} must be a numpy array, a zarr array, a tensorstore, or a "
        f"'path/container.zarr/key' string, got {type(data).__name__}"
    )


UNSUPPORTED_KINDS = {"O": "object", "U": "str", "S": "bytes", "T": "str", "V": "void"}


def check_array(source: Source, parameter: str) -> Source:
    """`source`, or a ValueError naming `parameter` if it has no axes, no voxels, or a dtype no
    block-wise operation can compute with (object, str, bytes, void)."""
    shape, dtype = tuple(source.shape), np.dtype(source.dtype)
    if not shape:
        raise ValueError(f"{parameter} is a 0-D array (a scalar); it needs at least one axis")
    if 0 in shape:
        raise ValueError(f"{parameter} is empty (shape {shape}): there is nothing to process")
    if dtype.kind in UNSUPPORTED_KINDS:
        raise ValueError(f"{parameter} has dtype {dtype} ({UNSUPPORTED_KINDS[dtype.kind]}); only bool and numeric dtypes are supported")
    return source


def same_storage(a: Source, b: Source) -> bool:
    """Whether two sources (or the sources lazy views wrap) are the same data: the same array
    folder on disk, or numpy arrays sharing memory. Writing one while reading the other would
    read voxels already overwritten."""
    while hasattr(a, "source"):
        a = a.source
    while hasattr(b, "source"):
        b = b.source
    x, y = getattr(a, "array", None), getattr(b, "array", None)
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        return np.shares_memory(x, y)
    folders = [getattr(s, "directory", None) for s in (a, b)]
    return None not in folders and os.path.realpath(folders[0]) == os.path.realpath(folders[1])


def _describe(array: np.ndarray | zarr.Array) -> str:
    if isinstance(array, zarr.Array):
        return f"{getattr(array.store, 'root', array.store)}/{array.path}"
    return f"numpy{array.shape}"
