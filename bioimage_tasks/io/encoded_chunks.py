"""s0 of a pyramid as a verbatim copy of the input's storage files, when both arrays store data
alike: a zarr input on local disk whose metadata (shape, data type, chunk grid, chunk keys,
codecs, fill value) equals the new s0's. Each file is read once; its bytes are written to s0 as
they are and decoded in memory for the levels, so s0 costs no encoding (most of a pyramid's time:
zstd on the whole base) and is bit for bit the input's.

A file the input lacks (all fill value) is deleted from s0, so s0 never keeps a stale one. A tile
that does not cover whole files (the budget's fallback) goes the usual way, decoded and encoded.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from bioimage_tasks.io.chunk_files import (
    StorageLayout,
    clear_stale_locks,
    covered_files,
    local_layout,
)
from bioimage_tasks.io.zarr_array import ArraySource

DECODER_THREADS = 8
_METADATA_FILES = {2: ".zarray", 3: "zarr.json"}
_NOT_COMPARED = ("attributes", "dimension_names")  # what does not change how chunks are stored
Encoded = dict[str, bytes | None]  # file name (relative to the array) -> its bytes, None if absent


@dataclass(frozen=True, eq=False)
class EncodedCopy:
    """Reads tiles of `source` as their storage files and writes those files into `sink`."""

    source: ArraySource
    sink: ArraySource
    layout: StorageLayout  # the files' grid unit and keys, the same in both arrays
    driver: str  # tensorstore's driver for the metadata (zarr or zarr3)
    metadata: dict[str, Any]  # the input's, to decode files in memory

    def covers_whole_files(self, key: tuple[slice, ...]) -> bool:
        """Whether `key` (a tile of s0) holds every file it touches whole (cut only by the edge)."""
        unit = self.layout[1]
        return all(
            s.start % u == 0 and (s.stop % u == 0 or s.stop >= n)
            for s, u, n in zip(key, unit, self.source.shape)
        )

    def start_read(self, key: tuple[slice, ...]) -> Callable[[], tuple[np.ndarray, Encoded]]:
        """Start reading and decoding the files of `key` in the background; the returned function
        waits and returns the decoded values and the files' bytes."""
        store, names = _kvstore(self.source.directory), self._names(key)
        reads = [(name, store.read(name)) for name in names]

        def decode() -> tuple[np.ndarray, Encoded]:
            encoded = {
                name: (result.value if result.state == "value" else None)
                for name, future in reads
                for result in [future.result()]
            }
            return _decode(self.driver, self.metadata, encoded, key), encoded

        return _decoders().submit(decode).result

    def start_write(self, key: tuple[slice, ...], encoded: Encoded) -> Callable[[], None]:
        """Write the files of `key` as read (delete those the input lacks); the returned function
        waits for them. Stale lock files of a killed writer go first, as for every write."""
        clear_stale_locks(self.sink.lock_layout, self.sink.shape, key)
        store = _kvstore(self.sink.directory)
        futures = [store.write(name, data) for name, data in encoded.items()]  # None deletes

        def finish() -> None:
            for future in futures:
                future.result()

        return finish

    def _names(self, key: tuple[slice, ...]) -> list[str]:
        directory = self.layout[0]
        return [os.path.relpath(path, directory) for path in covered_files(self.layout, key)]


def encoded_copy(source: Any, sink: Any) -> EncodedCopy | None:
    """The verbatim copy from `source` into `sink` if both are zarr arrays on local disk that store
    chunks alike and tensorstore reads them, and `sink` leaves all-fill chunks out; else None."""
    if not (isinstance(source, ArraySource) and isinstance(sink, ArraySource)):
        return None
    arrays = source.array, sink.array
    if (
        not all(isinstance(a, zarr.Array) for a in arrays)
        or source.directory is None
        or sink.directory is None
    ):
        return None
    if source.fast_io is None or sink.array.config.write_empty_chunks:
        return None
    stored = [
        {k: v for k, v in a.metadata.to_dict().items() if k not in _NOT_COMPARED} for a in arrays
    ]
    layout = local_layout(source)  # the sink's too: equal metadata store files alike
    if stored[0] != stored[1] or layout is None:
        return None
    zarr_format = source.array.metadata.zarr_format
    with open(os.path.join(source.directory, _METADATA_FILES[zarr_format])) as file:
        metadata = json.load(file)
    metadata.pop("attributes", None)
    return EncodedCopy(source, sink, layout, "zarr3" if zarr_format == 3 else "zarr", metadata)


@functools.cache
def _decoders() -> ThreadPoolExecutor:
    """This process's threads that wait for reads and hand them to tensorstore to decode, while
    the workers compute (a batch has one read in flight at a time)."""
    return ThreadPoolExecutor(
        max_workers=DECODER_THREADS, thread_name_prefix="bioimage-tasks-decode"
    )


@functools.lru_cache(maxsize=64)
def _kvstore(directory: str) -> ts.KvStore:
    """The file kvstore of an array's folder, opened once per process."""
    return ts.KvStore.open({"driver": "file", "path": directory.rstrip("/") + "/"}).result()


def _decode(
    driver: str, metadata: dict[str, Any], encoded: Encoded, key: tuple[slice, ...]
) -> np.ndarray:
    """The values of `key` from its files' bytes, decoded by tensorstore in memory."""
    store = ts.open(
        {"driver": driver, "kvstore": {"driver": "memory"}, "metadata": metadata},
        create=True,
        context=ts.Context(),
    ).result()
    writes = [store.kvstore.write(name, data) for name, data in encoded.items() if data is not None]
    for write in writes:
        write.result()
    return store[key].read().result()
