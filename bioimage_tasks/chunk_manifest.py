"""Chunk manifests: per output array, the latest stamp of every storage file (chunk, or shard)
our writes left, so that a rerun trusts a finished block only while the files it wrote are as it
left them, and `verify` (verify.py) can tell a damaged file from a good one.

Layout: `<array dir>/.bioimage-tasks/chunks/`, in the record log format of records.py (checksummed
lines appended by each process to its own segment file per shard, lock-free, torn lines ignored,
the latest event wins): the id of a storage file is its C-order index in the grid of files, and
the signature field holds its stamp:
- local files: "size:mtime_ns:crc32" of the file as written (zlib.crc32 of the stored bytes,
  ~5.7 GB/s here against ~1 GB/s for blake2b: reading the file back from the page cache and
  hashing it is small next to encoding it);
- object storage: "<generation>:<md5>" (the generation is the ETag, hex-encoded; the ETag is the
  MD5 of the bytes when it is 32 hex digits, a single PUT; "-" otherwise);
- "absent": the write left no file (an all-fill chunk is not stored);
- "invalid-<ns>": marked bad by `verify --repair`; matches no file.
A stamp is a fact about the file, whoever wrote it, so the manifest is independent of
computations (claiming an output for another one keeps it). A rerun compares a file's current
(size, mtime_ns), or its ETag, with its entry: a deleted, truncated or rewritten file, or one
with no entry, makes every block that wrote it run again. Bytes changed in place with size and
mtime kept are seen by `verify`'s checksum only."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bioimage_tasks.io.chunk_files import StorageLayout, storage_layout
from bioimage_tasks.io.kv import KvLocation, as_location
from bioimage_tasks.io.wrapped import WrappedSink
from bioimage_tasks.records import RECORDS_DIR, BlockRecords
from bioimage_tasks.signatures import MISSING, _stat_files

ABSENT = "absent"
UNKNOWN = "?"  # not looked at: the file has no entry
INVALID = "invalid"
MANIFEST_DIR = "chunks"
READ_PIECE = 4 << 20  # bytes hashed at a time
_HELD = threading.local()  # `stamps`: a StampBuffer holding this thread's stamps (hold_stamps)
_MD5 = re.compile(rb'"?([0-9a-f]{32})"?')

Region = tuple[slice, ...]


@dataclass(frozen=True)
class ChunkManifest:
    """The manifest of the array whose storage files `layout` describes (io/chunk_files.py),
    of shape `shape`. Plain data: it pickles to Dask workers."""

    layout: StorageLayout
    shape: tuple[int, ...]

    @functools.cached_property
    def records(self) -> BlockRecords:
        return BlockRecords(as_location(self.layout[0]).child(RECORDS_DIR).child(MANIFEST_DIR))

    @functools.cached_property
    def url(self) -> str:
        """The array's folder or URL (for messages, and to tell arrays apart)."""
        return as_location(self.layout[0]).url

    @functools.cached_property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(-(-n // u) for n, u in zip(self.shape, self.layout[1]))

    def cells(self, region: Region) -> np.ndarray:
        """Grid positions (N, ndim), C order, of the files `region` touches."""
        cells = self._cell_tuples(region)
        return np.array(cells, np.int64).reshape(-1, len(self.shape))

    def _cell_tuples(self, region: Region) -> list[tuple[int, ...]]:
        bounds = [s.indices(n)[:2] for s, n in zip(region, self.shape)]
        ranges = [range(a // u, -(-b // u)) for (a, b), u in zip(bounds, self.layout[1])]
        return list(itertools.product(*ranges))

    @functools.cached_property
    def _strides(self) -> tuple[int, ...]:
        return tuple(int(np.prod(self.grid_shape[axis + 1 :])) for axis in range(len(self.shape)))

    def file_ids(self, region: Region) -> list[int]:
        """Ids of the files `region` touches: `ids(cells(region))` in plain Python, several times
        faster for the one file or few a block covers."""
        bounds = [
            (s.start, s.stop) if s.start is not None and s.stop is not None else s.indices(n)[:2]
            for s, n in zip(region, self.shape)
        ]
        ranges = [
            range(a // u * t, -(-b // u) * t, t)
            for (a, b), u, t in zip(bounds, self.layout[1], self._strides)
        ]
        return [sum(offsets) for offsets in itertools.product(*ranges)]

    def ids(self, cells: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(cells.T), self.grid_shape).astype(np.int64)

    def cells_of(self, ids: Sequence[int]) -> np.ndarray:
        positions = np.unravel_index(np.asarray(ids, np.int64), self.grid_shape)
        return np.stack(positions, axis=1).reshape(-1, len(self.shape))

    def region(self, cell: Sequence[int]) -> Region:
        """The part of the array that the file at grid position `cell` holds."""
        unit = self.layout[1]
        return tuple(slice(c * u, min((c + 1) * u, n)) for c, u, n in zip(cell, unit, self.shape))

    def key(self, cell: Sequence[int]) -> str:
        """The file's key relative to the array, e.g. "c/0/1/2"."""
        _, _, prefix, separator = self.layout
        return prefix + separator.join(str(int(c)) for c in cell)

    def stamp(self, region: Region) -> None:
        """Record the stamp, checksum included, of every file `region` touches, as it is now
        (held until the batch records its blocks, inside `hold_stamps`)."""
        cells = self._cell_tuples(region)
        folder = self.layout[0]
        if isinstance(folder, KvLocation):
            stamps = [object_stamp(g) for g in folder.stamps([self.key(c) for c in cells])]
        else:
            stamps = [file_stamp(os.path.join(folder, self.key(c))) for c in cells]
        entries = list(zip(self.file_ids(region), stamps))
        held = getattr(_HELD, "stamps", None)
        if held is None:
            self.records.mark_done_many(entries)
        else:
            held.setdefault(self.records, []).extend(entries)

    def current(self, cells: np.ndarray) -> list[str]:
        """The comparable part of each file's stamp now ("size:mtime_ns", the generation, or
        "absent"), one batched stat (or HEAD requests in flight together)."""
        folder, _, prefix, separator = self.layout
        if not len(cells):
            return []
        if isinstance(folder, KvLocation):
            generations = folder.stamps([self.key(c) for c in cells])
            return [ABSENT if g is None else g.hex() for g in generations]
        order = np.lexsort(cells.T[::-1])  # folder by folder
        sizes, times = _stat_files(folder, prefix, separator, cells[order])
        found = [
            ABSENT if s == MISSING[0] else f"{s}:{t}"
            for s, t in zip(sizes.tolist(), times.tolist())
        ]
        result = [ABSENT] * len(cells)
        for position, stamp in zip(order.tolist(), found):
            result[position] = stamp
        return result

    def invalidate(self, ids: Iterable[int]) -> None:
        """Mark the entries of files `ids` bad: no file matches them, so their blocks run again."""
        invalid = f"{INVALID}-{time.time_ns()}"
        self.records.mark_done_many((block_id, invalid) for block_id in ids)


class StampBuffer(dict):
    """Stamps taken in one thread (manifest records -> entries), appended together by
    `flush`: one append per manifest shard for a group of blocks instead of one per block."""

    def flush(self) -> None:
        """Append the held stamps (before the blocks that wrote them are recorded as done)."""
        while self:
            records, entries = self.popitem()
            records.mark_done_many(entries)


@contextlib.contextmanager
def hold_stamps() -> Iterator[StampBuffer]:
    """Within it, stamps this thread takes are held in the buffer it yields, until its `flush`
    (a batch flushes them just before it records its blocks; whatever is left at the end is
    flushed too)."""
    buffer, outer = StampBuffer(), getattr(_HELD, "stamps", None)
    _HELD.stamps = buffer
    try:
        yield buffer
    finally:
        _HELD.stamps = outer
        buffer.flush()


def matches(entry: str | None, current: str) -> bool:
    """Whether a manifest entry vouches for a file whose current stamp is `current`."""
    if entry is None:
        return False
    return current == ABSENT if entry == ABSENT else entry.rsplit(":", 1)[0] == current


def file_stamp(path: str) -> str:
    """The stamp "size:mtime_ns:crc32" of a local file (size and time of the descriptor that was
    hashed), or "absent"."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return ABSENT
    try:
        status, checksum = os.fstat(handle), 0
        while piece := os.read(handle, READ_PIECE):
            checksum = zlib.crc32(piece, checksum)
    finally:
        os.close(handle)
    return f"{status.st_size}:{status.st_mtime_ns}:{checksum:08x}"


def object_stamp(generation: bytes | None) -> str:
    """The stamp "<generation hex>:<md5>" of an object (its MD5 when the ETag is one, else "-"),
    or "absent"."""
    if generation is None:
        return ABSENT
    md5 = _MD5.fullmatch(generation[1:])
    return f"{generation.hex()}:{md5.group(1).decode() if md5 else '-'}"


def manifest_of(sink: Any) -> ChunkManifest | None:
    """The manifest of an output array (a sink, wrapped or not); None in memory."""
    manifest = getattr(sink, "manifest", None)
    if manifest is not None or sink is None:
        return manifest
    layout = storage_layout(sink)
    return None if layout is None else ChunkManifest(layout, tuple(sink.shape))


@dataclass(frozen=True, eq=False)
class StampedSink(WrappedSink):
    """`inner` (a sink of bioimage_tasks.io, throttled or not, or an EncodedCopy), stamping the
    files each write touches into `manifest` once the write is done. Everything else is the
    inner sink's."""

    manifest: ChunkManifest

    def start_write(self, key: Region, values: Any) -> Callable[[], None]:
        """Start the write; the returned function waits for it, then stamps its files."""
        finish = self.inner.start_write(key, values)

        def done() -> None:
            finish()
            self.manifest.stamp(key)

        return done

    def start_stamp(self, key: Region) -> Callable[[], None]:
        """Stamp the files of `key` as they are (a block that left them alone vouches for them)."""
        return functools.partial(self.manifest.stamp, key)


def stamp_writes(sink: Any) -> Any:
    """`sink` whose writes stamp their files into the array's manifest (in memory: `sink`)."""
    if sink is None or isinstance(sink, StampedSink):
        return sink
    manifest = manifest_of(sink)
    return sink if manifest is None else StampedSink(sink, manifest)


def start_stamp(sink: Any, key: Region) -> Callable[[], None]:
    """`sink.start_stamp(key)` for a stamped sink; a no-op otherwise."""
    stamp = getattr(sink, "start_stamp", None)
    return stamp(key) if stamp is not None else lambda: None


@dataclass
class _FileState:
    """What a file is now against its manifest entry."""

    manifest: ChunkManifest
    file_id: int
    entry: str | None
    current: str
    sink: Any  # a sink writing the file, to read it through the array's codec

    def delete_if_unreadable(self) -> None:
        """Delete the file if reading its region through the sink fails (it no longer decodes)."""
        if self.current == ABSENT or self.entry is None:
            return
        cell = self.manifest.cells_of([self.file_id])[0]
        try:
            self.sink[self.manifest.region(cell)]
        except Exception:  # noqa: BLE001 - whatever the codec raises: the bytes are useless
            as_location(self.manifest.layout[0]).delete(self.manifest.key(cell))

    def describe(self) -> str:
        """The file and how it differs, e.g. ".../s1/c/0/1/2 (deleted)"."""
        key = self.manifest.key(self.manifest.cells_of([self.file_id])[0])
        return f"{self.manifest.url}/{key} ({self.why()})"

    def why(self) -> str:
        """How the file differs from its entry, in words."""
        then = None if self.entry is None else self.entry.split(":")
        if then is None or then[0].startswith(INVALID):
            return "no manifest entry" if then is None else "marked bad"
        if self.current == ABSENT or then == [ABSENT]:
            return "deleted" if self.current == ABSENT else "a file where the write left none"
        now = self.current.split(":")
        if len(now) == 1:
            return "another object generation (ETag)"
        return f"{now[0]} bytes, {then[0]} written" if now[0] != then[0] else "modified (mtime)"


def _not_as_written(job: Any, block_ids: Sequence[int]) -> dict[int, list[_FileState]] | None:
    """Per block whose writes (`job.written_regions`) cover a file that is not as its manifest
    entry says (or has none), those files; None for a job that does not say what it writes. Each
    manifest is read once, and each file with an entry stat'ed once (a first run stats nothing)."""
    regions_of = getattr(job, "written_regions", None)
    if regions_of is None:
        return None
    by_sink: dict[int, tuple[ChunkManifest, dict[int, list[int]], Any] | None] = {}
    by_url: dict[str, tuple[ChunkManifest, dict[int, list[int]], Any]] = {}
    for block_id in block_ids:
        for sink, region in regions_of(block_id):
            if id(sink) not in by_sink:  # each array's files once, whichever sink writes them
                manifest = manifest_of(sink)
                by_sink[id(sink)] = (
                    None
                    if manifest is None
                    else by_url.setdefault(manifest.url, (manifest, {}, sink))
                )
            if by_sink[id(sink)] is not None:
                manifest, users, _ = by_sink[id(sink)]
                for file_id in manifest.file_ids(region):
                    users.setdefault(file_id, []).append(block_id)
    bad: dict[int, list[_FileState]] = {}
    for manifest, users, sink in by_url.values():
        entries = manifest.records.recorded(users)
        stamped = sorted(entries)  # a file without an entry is not vouched for, whatever it is now
        now = dict(zip(stamped, manifest.current(manifest.cells_of(stamped))))
        for file_id, writers in users.items():
            entry, current = entries.get(file_id), now.get(file_id, UNKNOWN)
            if not matches(entry, current):
                state = _FileState(manifest, file_id, entry, current, sink)
                for block_id in writers:
                    bad.setdefault(block_id, []).append(state)
    return bad


def outputs_intact(
    job: Any, block_ids: Iterable[int], logger: Any = None, clear_unreadable: bool = False
) -> set[int]:
    """The blocks of `block_ids` whose written files (`job.written_regions`) all still match
    their manifest entries; all of them for a job that does not say what it writes. `logger`
    (optional) is told which files made blocks run again. With `clear_unreadable` (just before
    the others are rewritten), their files that no longer decode are deleted: a write that
    covers part of one (or the part of an edge shard inside the array) would read it, and fail."""
    block_ids = list(block_ids)
    bad = _not_as_written(job, block_ids) if block_ids else None
    if not bad:
        return set(block_ids)
    changed = {id(s): s for b in sorted(bad) for s in bad[b]}
    if logger is not None:
        shown = ", ".join(s.describe() for s in list(changed.values())[:5])
        logger.warning(
            "%d recorded blocks run again: %d files they wrote are not as written (%s%s)",
            len(bad),
            len(changed),
            shown,
            ", ..." if len(changed) > 5 else "",
        )
    if clear_unreadable:
        for state in changed.values():
            state.delete_if_unreadable()
    return set(block_ids) - set(bad)


def damage_token(job: Any, block_ids: Sequence[int]) -> str:
    """Empty while no file the blocks wrote differs from its manifest entry, else a hash of what
    differs: for a cache key, so a cached batch does not stand in for damaged files, while a
    batch not yet written and the same batch intact get the same key."""
    bad = _not_as_written(job, list(block_ids)) if block_ids else None
    changed = sorted(
        {
            (s.manifest.url, s.file_id, s.entry, s.current)
            for states in (bad or {}).values()
            for s in states
            if s.entry is not None
        }
    )
    if not changed:
        return ""
    return "-" + hashlib.blake2b(repr(changed).encode(), digest_size=8).hexdigest()
