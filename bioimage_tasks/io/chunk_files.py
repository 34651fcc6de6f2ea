"""Where a zarr or n5 array keeps its storage files (one per chunk, or per shard), and the
clearing of lock files that a killed tensorstore writer leaves beside them.

tensorstore's file kvstore writes a chunk into `<key>.__lock` under a POSIX lock, then renames
that file over `<key>`. A writer killed in between leaves the lock file with its bytes, and
tensorstore 0.1.86 reuses such a file without truncating it: the next write of that chunk is the
new bytes followed by the dead writer's tail, a chunk that no longer decodes
(`tests/test_stale_locks.py` fails without what follows). So every write into a local array first
removes the stale lock files of the storage files it covers, following tensorstore's own rule: only
the holder of the lock, while the file still has the lock path, may unlink it. A lock file a live
writer holds is left alone."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
from collections.abc import Iterator
from typing import Any

import zarr

from bioimage_tasks.io.kv import KvLocation

StorageLayout = tuple[
    str | KvLocation, tuple[int, ...], str, str
]  # folder, grid unit of a file, key prefix, separator
LOCK_SUFFIX = ".__lock"  # tensorstore's (tensorstore/kvstore/file/util.h kLockSuffix)


def storage_layout(source: Any) -> StorageLayout | None:
    """Where the storage files of a file-backed zarr (zarr-python or tensorstore) or n5 source
    are: its directory, the grid unit one file holds (shard or chunk), and each file's key."""
    array = getattr(source, "array", None)
    if isinstance(array, zarr.Array):
        directory = getattr(source, "directory", None)
        if directory is None:
            return None
        metadata = array.metadata
        if metadata.zarr_format == 2:
            return directory, tuple(metadata.chunks), "", metadata.dimension_separator or "."
        encoding = metadata.chunk_key_encoding
        prefix = "c" + encoding.separator if encoding.name == "default" else ""
        return directory, tuple(metadata.chunk_grid.chunk_shape), prefix, encoding.separator
    store = getattr(source, "store", None)
    if store is None or not hasattr(store, "spec"):
        return None
    spec = store.spec(retain_context=False).to_json()
    kvstore = spec.get("kvstore", {})
    if kvstore.get("driver") == "file":
        directory = os.path.join(kvstore["path"], spec.get("path", "")).rstrip("/")
    elif isinstance(getattr(source, "location", None), KvLocation):
        directory = source.location
    else:
        return None
    metadata = spec.get("metadata", {})
    if spec["driver"] == "n5":
        return directory, tuple(metadata["blockSize"]), "", "/"
    if spec["driver"] == "zarr":
        return directory, tuple(metadata["chunks"]), "", metadata.get("dimension_separator", ".")
    if spec["driver"] == "zarr3":
        grid = metadata["chunk_grid"]["configuration"]["chunk_shape"]
        encoding = metadata.get("chunk_key_encoding", {"name": "default"})
        separator = encoding.get("configuration", {}).get(
            "separator", "/" if encoding["name"] == "default" else "."
        )
        return (
            directory,
            tuple(grid),
            "c" + separator if encoding["name"] == "default" else "",
            separator,
        )
    return None


def local_layout(source: Any) -> StorageLayout | None:
    """`storage_layout` of an array in a local folder; None for object storage and memory."""
    layout = storage_layout(source)
    return layout if layout is not None and isinstance(layout[0], str) else None


def covered_files(layout: StorageLayout, region: tuple[slice, ...]) -> Iterator[str]:
    """Paths of the storage files (existing or not) that `region` (unit-step slices with bounds)
    of a local array touches.

    >>> list(covered_files(("/a", (4, 4), "c/", "/"), (slice(2, 6), slice(0, 4))))
    ['/a/c/0/0', '/a/c/1/0']
    """
    directory, unit, prefix, separator = layout
    ranges = [range(s.start // u, -(-s.stop // u)) for s, u in zip(region, unit)]
    for cell in itertools.product(*ranges):
        yield os.path.join(directory, prefix + separator.join(map(str, cell)))


def clear_stale_locks(
    layout: StorageLayout | None, shape: tuple[int, ...], key: tuple[slice, ...]
) -> int:
    """Remove the lock files no live writer holds beside the storage files that `key` (slices of
    an array of `shape`) covers; return how many were removed. One failed open per file when
    there is none (the usual case: about 2 us)."""
    if layout is None:
        return 0
    region = tuple(slice(*s.indices(n)[:2]) for s, n in zip(key, shape))
    return sum(remove_if_stale(path + LOCK_SUFFIX) for path in covered_files(layout, region))


def remove_if_stale(lock_path: str) -> bool:
    """Unlink `lock_path` if no one holds a lock on it, holding the lock ourselves while we check
    it is still the file at that path (tensorstore's rule); False if absent or held."""
    try:
        handle = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:  # traditional POSIX locks conflict with tensorstore's open-file-description locks
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return False  # a live writer holds it and will rename it
            raise
        try:
            if os.stat(lock_path).st_ino != os.fstat(handle).st_ino:
                return False  # already replaced: not the file we hold
        except FileNotFoundError:
            return False
        os.unlink(lock_path)
        return True
    finally:
        os.close(handle)
