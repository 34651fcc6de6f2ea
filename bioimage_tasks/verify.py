"""`verify`: check an output array, or every level (and staging array) of a pyramid group, file by
file against its chunk manifest (chunk_manifest.py): every stored file is read once, hashed and
decoded through the array's codec, and each chunk (or shard) that is missing, unreadable or
changed since it was written, or stored without a manifest entry, is reported by its key.

`repair=True` re-runs the call that wrote the output, which each run leaves in
`<output>/.bioimage-tasks/run.json` (run_call.py): the bad files' manifest entries are marked
invalid, the call runs again on threads and rewrites only the blocks whose files are bad
(deleting first those that no longer decode), then the output is verified again."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.api_docs import shared_docs
from bioimage_tasks.chunk_manifest import ABSENT, INVALID, ChunkManifest, manifest_of
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io import ContainerPath, KvLocation, LocalLocation, Location, UrlPath
from bioimage_tasks.io.ome_zarr import multiscale_of
from bioimage_tasks.io.urls import StorageOptions, is_url
from bioimage_tasks.records import RECORDS_DIR, SHARD_BLOCKS
from bioimage_tasks.run_call import stored_call

Labelled = list[tuple[str, Any]]  # (label, source) of each array of an output
READERS = 4  # files read, hashed and decoded at once (memory: about this many files)
REPAIR_WORKERS = 2  # threads of the repair's rerun


@dataclass(frozen=True)
class BadChunk:
    """A storage file (chunk, or shard) that is not as written: `kind` is "missing",
    "unreadable", "changed" or "unrecorded" (stored, no manifest entry)."""

    array: str  # "" for a single array, else the level ("s2") or staging array
    key: str  # e.g. "c/0/1/2"
    kind: str
    detail: str
    file_id: int = -1  # its C-order index in the array's grid of files

    @property
    def where(self) -> str:
        return f"{self.array}/{self.key}" if self.array else self.key

    def line(self) -> str:
        return f"{self.kind}: {self.where} ({self.detail})"


@dataclass
class VerifyReport:
    """What `verify` found.

    Attributes
    ----------
    path : str
        The output checked.
    arrays : list of str
        The arrays checked (a pyramid's levels and staging arrays).
    files : int
        Files read.
    bytes_read : int
        Bytes read.
    seconds : float
        Time the check took.
    bad : list of BadChunk
        The files that are not as written (after a repair: those still bad).
    repaired : list of BadChunk
        After a repair, the bad files it found and had rewritten.
    """

    path: str
    arrays: list[str] = field(default_factory=list)
    files: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    bad: list[BadChunk] = field(default_factory=list)
    repaired: list[BadChunk] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no file is bad."""
        return not self.bad

    def lines(self) -> list[str]:
        """One line per bad chunk (and per repaired one)."""
        return [f"repaired {b.line()}" for b in self.repaired] + [b.line() for b in self.bad]

    def summary(self) -> str:
        """E.g. "out.zarr/s1: 1 arrays, 64 files, 3.2 MB checked in 0.05 s: 1 missing"."""
        kinds = [b.kind for b in self.bad]
        found = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "all intact"
        repaired = f"; {len(self.repaired)} repaired" if self.repaired else ""
        megabytes = self.bytes_read / 1e6
        return (
            f"{self.path}: {len(self.arrays)} arrays, {self.files} files, {megabytes:.1f} MB "
            f"checked in {self.seconds:.2f} s: {found}{repaired}"
        )


@shared_docs
def verify(
    path: str, storage_options: StorageOptions | dict | None = None, repair: bool = False
) -> VerifyReport:
    """Check that every stored chunk of an output is as it was written; optionally repair it.

    Every chunk (or shard) file of the output array, or of every level of a pyramid group, is
    read once, hashed and decoded, and compared with the chunk manifest the run that wrote it
    kept: a file that is missing, unreadable (does not decode), changed since it was written,
    or stored without a manifest entry is reported by its key. Storage can lose or damage
    files (a full disk, a bad copy, a sync tool); this finds them without a reference copy.
    With `repair`, the call that wrote the output (kept in `<output>/.bioimage-tasks/run.json`)
    runs again on threads and rewrites only the blocks whose files are bad; then the output is
    checked again.

    Parameters
    ----------
    path : str
        The output: a zarr or n5 array (`"out.zarr/key"`), an OME-Zarr group written by
        `pyramid` (`"image.ome.zarr"`: every level and staging array), or an
        `"s3://bucket/..."` URL.
    %(storage_options)s
    repair : bool, default False
        Rewrite the bad chunks by re-running the stored call (its input must still be there,
        unchanged), then check again.

    Returns
    -------
    VerifyReport
        What was checked and what is bad: `report.ok`, `report.bad` (after a repair, what is
        still bad), `report.repaired`, `report.summary()` and `report.lines()`.

    Raises
    ------
    ParameterError
        `path` is no array or pyramid group, or is not stored in files; or a repair is asked
        of an output without a stored call, or whose call cannot be repeated (data passed in
        memory). Raised before anything is changed.

    See Also
    --------
    verify_flow : the same check as a Prefect flow, e.g. on a schedule.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> import zarr
    >>> import bioimage_tasks as bt
    >>> from bioimage_tasks.verify import verify
    >>> folder = tempfile.TemporaryDirectory()
    >>> source = zarr.create_array(f"{folder.name}/in.zarr", name="raw", shape=(16, 16),
    ...                            chunks=(8, 8), dtype="uint8")
    >>> source[:] = np.arange(256).reshape(16, 16)
    >>> out = bt.copy(f"{folder.name}/in.zarr/raw", f"{folder.name}/out.zarr/raw")
    >>> verify(f"{folder.name}/out.zarr/raw").ok
    True
    >>> os.remove(f"{folder.name}/out.zarr/raw/c/0/0")  # a chunk file lost
    >>> verify(f"{folder.name}/out.zarr/raw").lines()
    ['missing: c/0/0 (no file)']
    >>> verify(f"{folder.name}/out.zarr/raw", repair=True).lines()
    ['repaired missing: c/0/0 (no file)']
    >>> folder.cleanup()
    """
    place, arrays = output_arrays(path, storage_options)
    report = _check(path, arrays)
    if not repair or report.ok:
        return report
    call = stored_call(place, path)
    for label, source in arrays:  # no entry matches its file now: blocks that wrote it run again
        manifest_of(source).invalidate(b.file_id for b in report.bad if b.array == label)
    _rerun(call, storage_options)
    after = _check(path, output_arrays(path, storage_options)[1])
    after.repaired = [b for b in report.bad if b.where not in {a.where for a in after.bad}]
    return after


def _check(path: str, arrays: Labelled) -> VerifyReport:
    started = time.perf_counter()
    report = VerifyReport(path, [label or path for label, _ in arrays])
    for label, source in arrays:
        check_array(label, source, report)
    report.seconds = time.perf_counter() - started
    return report


def output_arrays(
    path: str, storage_options: StorageOptions | dict | None = None
) -> tuple[Location, Labelled]:
    """Where the output keeps its run.json, and its arrays as (label, source): the array itself
    (label ""), or a pyramid group's levels ("s0", ...) and staging arrays."""
    parsed = (
        UrlPath.parse(path, "path", storage_options)
        if is_url(path)
        else ContainerPath.parse(path, "path")
    )
    folder = (
        parsed.location()
        if isinstance(parsed, UrlPath)
        else LocalLocation(os.path.abspath(os.path.join(parsed.container, parsed.key)))
    )
    attributes = _group_attributes(folder)
    if attributes is None:
        if not parsed.exists():
            raise ParameterError(f"path: no zarr or n5 array or group at {path!r}")
        return folder, [("", parsed.open("r"))]
    multiscale = multiscale_of(attributes)
    if multiscale is None:
        raise ParameterError(
            f"path: {path!r} is a zarr group without OME-Zarr multiscales "
            "metadata; give one of its arrays"
        )
    levels = [
        (d["path"], dataclasses.replace(parsed, key=f"{parsed.key}/{d['path']}".lstrip("/")))
        for d in multiscale["datasets"]
    ]
    staging = f"{parsed.container}/{parsed.key}".rstrip("/") + f"/{RECORDS_DIR}/staging.zarr"
    levels += [
        (
            f"{RECORDS_DIR}/staging.zarr/{name}",
            dataclasses.replace(parsed, container=staging, key=name),
        )
        for name in sorted(folder.child(RECORDS_DIR).child("staging.zarr").names())
        if name[:1] == "s" and name[1:].isdigit()
    ]
    return folder, [(label, level.open("r")) for label, level in levels if level.exists()]


def _group_attributes(folder: Location) -> dict | None:
    """The attributes of the zarr group in `folder` (v3 zarr.json, or v2 .zgroup/.zattrs); None
    when it is no group."""
    metadata = folder.read("zarr.json")
    if metadata is not None:
        document = json.loads(metadata)
        return document.get("attributes", {}) if document.get("node_type") == "group" else None
    if folder.read(".zgroup") is None:
        return None
    return json.loads(folder.read(".zattrs") or b"{}")


def check_array(label: str, source: Any, report: VerifyReport) -> None:
    """Check every stored file and manifest entry of one array, a manifest shard at a time, and
    add what is bad to `report`."""
    manifest = manifest_of(source)
    if manifest is None:
        raise ParameterError(
            f"path: {label or report.path} is not stored in files (nothing to verify)"
        )
    decode = decoder(source, manifest)
    listed = _listed_ids(manifest)
    n_files = int(np.prod(manifest.grid_shape))
    with ThreadPoolExecutor(READERS, thread_name_prefix="bioimage-tasks-verify") as pool:
        for start in range(0, n_files, SHARD_BLOCKS):
            ids = range(start, min(start + SHARD_BLOCKS, n_files))
            entries = manifest.records.recorded(ids)
            if listed is None:  # local: a stat of every file of the shard
                now = manifest.current(manifest.cells_of(ids))
                stored = {i for i, stamp in zip(ids, now) if stamp != ABSENT}
            else:
                stored = {i for i in ids if i in listed}
            wanted = sorted(stored | {i for i, e in entries.items() if e != ABSENT})
            check = functools.partial(_check_file, label, manifest, decode=decode)
            for size, bad in pool.map(check, wanted, [entries.get(i) for i in wanted]):
                report.files += size is not None
                report.bytes_read += size or 0
                report.bad += [bad] if bad is not None else []


def _listed_ids(manifest: ChunkManifest) -> set[int] | None:
    """On object storage, the ids of the stored files (one listing); None for local files."""
    folder, _, prefix, separator = manifest.layout
    if not isinstance(folder, KvLocation):
        return None
    found = set()
    for key in folder.keys():  # noqa: SIM118 - a listing, not a dict
        parts = key[len(prefix) :].split(separator) if key.startswith(prefix) else []
        if len(parts) == len(manifest.shape) and all(p.isdigit() for p in parts):
            cell = np.array([[int(p) for p in parts]])
            if np.all(cell < np.array(manifest.grid_shape)):
                found.add(int(manifest.ids(cell)[0]))
    return found


def _read(manifest: ChunkManifest, key: str) -> tuple[bytes | None, bytes | None]:
    """A file's bytes (None if absent) and, on object storage, its generation."""
    folder = manifest.layout[0]
    if isinstance(folder, KvLocation):
        result = folder.kvstore.read(key).result()
        return (result.value, result.stamp.generation) if result.state == "value" else (None, None)
    try:
        with open(os.path.join(folder, key), "rb") as stream:
            return stream.read(), None
    except FileNotFoundError:
        return None, None


Decoder = Callable[[np.ndarray, str, bytes], str | None]  # (cell, key, bytes) -> error or None


def _check_file(
    label: str, manifest: ChunkManifest, file_id: int, entry: str | None, decode: Decoder
) -> tuple[int | None, BadChunk | None]:
    """(bytes read or None, what is wrong or None) for one file against its manifest entry."""
    cell = manifest.cells_of([file_id])[0]
    key = manifest.key(cell)
    bad = functools.partial(BadChunk, label, key, file_id=file_id)
    data, generation = _read(manifest, key)
    if data is None:
        marked = entry is not None and entry.startswith(INVALID)
        written = "marked bad by a repair, not rewritten" if marked else "no file"
        return None, (bad("missing", written) if entry is not None and entry != ABSENT else None)
    error = decode(cell, key, data)
    if error is not None:
        return len(data), bad("unreadable", error)
    if entry is None:
        return len(data), bad("unrecorded", "stored, but no write of ours stamped it")
    change = _change(entry, data, generation)
    return len(data), None if change is None else bad("changed", change)


def _change(entry: str, data: bytes, generation: bytes | None) -> str | None:
    """How the bytes differ from what the entry says was written; None if they do not."""
    if entry == ABSENT:
        return "stored where the write left no file"
    if entry.startswith(INVALID):
        return "marked bad by a repair, not rewritten"
    parts = entry.split(":")
    if generation is None:  # local: size:mtime_ns:crc32
        if f"{zlib.crc32(data):08x}" != parts[2]:
            return f"checksum differs ({len(data)} bytes now, {parts[0]} written)"
        return None
    if parts[1] != "-":  # the ETag was the MD5 of the bytes
        same = hashlib.md5(data).hexdigest() == parts[1]
        return None if same else "MD5 differs from the ETag written"
    return None if generation.hex() == parts[0] else "another object generation (ETag) than written"


def decoder(source: Any, manifest: ChunkManifest) -> Decoder:
    """A function decoding one file's bytes through the array's codec (tensorstore, in memory):
    (cell, key, bytes) -> None, or the decoding error."""
    store = getattr(source, "fast_io", None) or getattr(source, "store", None)
    box = manifest.region
    if store is None:  # codecs only zarr-python has: read the file's region through it
        return lambda cell, key, data: _error_of(lambda: source[box(cell)])
    spec = store.spec(retain_context=False).to_json()
    memory = ts.open(
        {"driver": spec["driver"], "kvstore": {"driver": "memory"}, "metadata": spec["metadata"]},
        create=True,
        context=ts.Context(),
    ).result()

    def decode(cell: np.ndarray, key: str, data: bytes) -> str | None:
        memory.kvstore.write(key, data).result()
        try:
            return _error_of(lambda: memory[box(cell)].read().result())
        finally:
            memory.kvstore.write(key, None).result()

    return decode


def _error_of(read: Callable[[], Any]) -> str | None:
    try:
        read()
    except Exception as error:  # noqa: BLE001 - any decoding failure is what we report
        return str(error).splitlines()[0][:200] or type(error).__name__
    return None


def _rerun(call: dict[str, Any], storage_options: StorageOptions | dict | None) -> None:
    """Run the stored call again with the plain API on threads (it recomputes only the blocks
    whose files are bad)."""
    from bioimage_tasks import api

    flow = getattr(api, call["operation"])
    parameters = call["parameters"] | {"job_type": "local", "num_workers": REPAIR_WORKERS}
    if storage_options is not None:
        parameters["storage_options"] = storage_options
    with contextlib.chdir(call["cwd"]) if "cwd" in call else contextlib.nullcontext():
        flow(**parameters)
