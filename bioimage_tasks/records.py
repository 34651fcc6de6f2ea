"""Block records: which blocks of a run key are finished, and the input signature each one read,
kept with the output so a rerun knows exactly which blocks are done and still current.

Layout, cheap at 10**6 blocks: `<array dir>/.bioimage-tasks/blocks/<run key>/<shard>/<segment>`.
Block ids are grouped in shards of SHARD_BLOCKS ids (one folder each), and every process appends
to its own segment file per shard, one checksummed line per event (`<id> <time_ns> <signature>
<crc32>`). So a run of N blocks makes about N / SHARD_BLOCKS folders and a few files each instead of
N files; checking a batch reads only its shards; no two writers share a file (no locks, safe on
NFS/Lustre); a line torn by a killed writer fails its checksum and is ignored, so a record is
either whole or absent. The latest event of a block wins: `forget` appends a tombstone.
On object storage (an `io.kv.KvLocation`) every append is an object of its own (`<segment>.<n>`),
since objects cannot be appended to and each PUT is atomic."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bioimage_tasks.io.kv import Location, as_location

RECORDS_DIR = ".bioimage-tasks"
SHARD_BLOCKS = 4096
_NO_SIGNATURE, _FORGOTTEN = "-", "!"


def run_key(fingerprint: dict[str, Any]) -> str:
    """A short, stable hash of everything that decides the output of a run."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def executor() -> str:
    """Who is running this block: the SLURM job, else host and process."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-job:{job}" if job else f"{socket.gethostname()}:{os.getpid()}"


def records_at(place: str | Location, key: str) -> BlockRecords:
    """The records of run key `key` of the output at `place` (its folder, or its Location)."""
    if isinstance(place, (str, os.PathLike)):
        return BlockRecords(os.path.join(place, RECORDS_DIR, "blocks", key))
    return BlockRecords(place.child(RECORDS_DIR).child("blocks").child(key))


@dataclass(frozen=True)
class Entry:
    """The latest record of a block: its input signature (None if unknown), when (ns since the
    epoch) and by whom it was written."""

    signature: str | None
    time_ns: int
    executor: str


class _Segments:
    """This process's segment file name (renewed after a fork), and striped locks: two threads
    never interleave their lines in one segment, while appends to different folders (the records
    of other outputs, converted side by side) do not wait for each other's file creation."""

    STRIPES = 64

    def __init__(self) -> None:
        self._name_lock = threading.Lock()
        self._locks = [threading.Lock() for _ in range(self.STRIPES)]
        self.pid = -1
        self.tag = ""

    def name(self) -> str:
        with self._name_lock:
            if self.pid != os.getpid():
                self.pid, self.tag = os.getpid(), uuid.uuid4().hex[:8]
            return f"{socket.gethostname()}-{self.pid}-{self.tag}.log"

    def lock(self, folder: Location) -> threading.Lock:
        """The lock of the segment in `folder` (one of STRIPES: bounded however many folders)."""
        return self._locks[hash(folder.url) % self.STRIPES]


_SEGMENTS = _Segments()


def _line(block_id: int, time_ns: int, signature: str) -> str:
    body = f"{block_id} {time_ns} {signature}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n"


@dataclass(frozen=True)
class BlockRecords:
    """The records of one run key under `directory` (`<array dir>/.bioimage-tasks/blocks/<key>`: a
    local path, or a `Location` such as an object-store prefix, io/kv.py). Plain data, so it
    pickles to Dask workers; independent of any plan or grid, so any flow can keep records of its
    own block ids (a pyramid's base regions, say)."""

    directory: str | Location

    @functools.cached_property
    def location(self) -> Location:
        return as_location(self.directory)

    @property
    def url(self) -> str:
        """Where the records are, for messages: a path or a URL."""
        return self.location.url

    @property
    def key(self) -> str:
        """The run key these records belong to."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def mark_done(self, block_id: int, signature: str | None = None) -> None:
        """Record `block_id` as written from input whose signature is `signature`."""
        self.mark_done_many([(block_id, signature)])

    def mark_done_many(self, blocks: Iterable[tuple[int, str | None]]) -> None:
        """Record each (block id, input signature) of `blocks` as written, in one append per
        shard."""
        self._append([(block_id, signature or _NO_SIGNATURE) for block_id, signature in blocks])

    def mark_each(self, signatures: dict[int, str]) -> None:
        """Record each block of `signatures` with its own signature, in one append per shard."""
        self._append_lines(signatures.items())

    def forget(self, block_ids: Iterable[int]) -> None:
        """Drop the records of `block_ids` (they are about to be rewritten)."""
        block_ids = list(block_ids)
        recorded = self.entries(block_ids)
        self._append([(b, _FORGOTTEN) for b in block_ids if b in recorded])

    def entries(self, block_ids: Iterable[int] | None = None) -> dict[int, Entry]:
        """The latest record of each recorded block (of `block_ids`, reading only their shards;
        default: every block)."""
        return {
            b: Entry(None if s == _NO_SIGNATURE else s, t, who)
            for b, (t, s, who) in self._latest(block_ids).items()
        }

    def recorded(self, block_ids: Iterable[int] | None = None) -> dict[int, str | None]:
        """The stored input signature of each recorded block (of `block_ids`)."""
        return {
            b: None if s == _NO_SIGNATURE else s for b, (_, s, _) in self._latest(block_ids).items()
        }

    def done_among(
        self, block_ids: Iterable[int], signatures: dict[int, str | None] | None = None
    ) -> set[int]:
        """Which of `block_ids` are recorded and, when `signatures` are given, were written from
        input with the same signature: a block whose input changed is not done."""
        recorded = self.recorded(block_ids)
        if signatures is None:
            return set(recorded)
        return {b for b, s in recorded.items() if s == signatures.get(b)}

    def done(self) -> set[int]:
        """Ids of all recorded blocks."""
        return set(self.entries())

    def executors(self) -> dict[int, str]:
        """Which executor wrote each recorded block."""
        return {b: e.executor for b, e in self.entries().items()}

    def _append(self, events: list[tuple[int, str]]) -> None:
        by_shard: dict[int, list[str]] = {}
        time_ns = time.time_ns()
        for block_id, signature in events:
            by_shard.setdefault(block_id // SHARD_BLOCKS, []).append(
                _line(block_id, time_ns, signature)
            )
        location, name, header = self.location, _SEGMENTS.name(), f"# {executor()}\n".encode()
        for shard, lines in by_shard.items():
            folder = location.child(f"{shard:06d}")
            with _SEGMENTS.lock(folder):  # the executor once, as a header
                folder.append(name, "".join(lines).encode(), header)

    def _latest(self, block_ids: Iterable[int] | None) -> dict[int, tuple[int, str, str]]:
        """(time_ns, signature, executor) of the latest event of each block, tombstones dropped."""
        wanted = None if block_ids is None else set(block_ids)
        location = self.location
        shards = (
            sorted(int(n) for n in location.names() if n.isdigit())
            if wanted is None
            else sorted({b // SHARD_BLOCKS for b in wanted})
        )
        latest: dict[int, tuple[int, str, str]] = {}
        for shard in shards:
            for block_id, time_ns, signature, who in _read_shard(location.child(f"{shard:06d}")):
                if (wanted is None or block_id in wanted) and (
                    block_id not in latest or time_ns >= latest[block_id][0]
                ):
                    latest[block_id] = (time_ns, signature, who)
        return {b: event for b, event in latest.items() if event[1] != _FORGOTTEN}


def _read_shard(folder: Location) -> Iterable[tuple[int, int, str, str]]:
    """Every whole, intact line of a shard's segments: (block id, time_ns, signature, executor)."""
    names = folder.logs()
    contents = folder.read_many(names)
    for data in contents:
        lines = (data or b"").split(b"\n")[:-1]  # the last piece has no newline: torn or empty
        who = (
            lines[0][2:].decode(errors="replace")
            if lines and lines[0].startswith(b"# ")
            else "unknown"
        )
        for line in lines:
            body, _, crc = line.rpartition(b" ")
            parts = body.split(b" ")
            if len(parts) != 3 or crc != b"%08x" % zlib.crc32(body):
                continue
            yield int(parts[0]), int(parts[1]), parts[2].decode(), who
