"""TIFF and OME-TIFF inputs through tifffile: one file (BigTIFF, tiled or striped, a chosen
series), or a folder or glob of 2-D slices read as one lazy 3-D stack.

Paths: `"stack.ome.tif"` (series 0), `"stack.ome.tif/1"` (series 1), `"slices/"` (every .tif or
.tiff file inside, in natural order), `"slices/z*.tif"` (a glob). Planes of single samples are
read from their strips and tiles with tifffile's own reader and decoder (`PlaneReader`), other
layouts through tifffile's zarr store (`imread(aszarr=True)`). The source pickles as its file
names and reopens the file in each process (tifffile handles cannot be pickled); `read_unit` is
one strip or tile of one plane, so block grids can cover whole strips and tiles and decode each
once."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from xml.etree import ElementTree

import numpy as np
import tifffile
import zarr

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.source import Physical
from bioimage_tasks.io.tiff_headers import check_slices

TIFF_SUFFIXES = (".tif", ".tiff")
OPEN_PLANES = 64  # slice files a sequence keeps open per process
READ_THREADS = 2  # background reads per process, shared by its TIFF sources (start_read)
# OME and ImageJ unit spellings -> NGFF (UDUNITS-2) names
UNITS = {
    "µm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "\\u00B5m": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "Å": "angstrom",
    "pm": "picometer",
    "s": "second",
    "ms": "millisecond",
    "min": "minute",
    "h": "hour",
}
OME_SIZES = {
    "x": ("PhysicalSizeX", "µm"),
    "y": ("PhysicalSizeY", "µm"),
    "z": ("PhysicalSizeZ", "µm"),
    "t": ("TimeIncrement", "s"),
}


@dataclass(frozen=True, eq=False)
class TiffSource:
    """Series `series` of one TIFF file (`files` has one name), or 2-D slice files stacked along
    a new first axis. Shape, dtype, chunks and physical metadata are read once by `open_tiff`."""

    files: tuple[str, ...]
    series: int
    shape: tuple[int, ...]
    dtype: np.dtype
    read_unit: tuple[int, ...]
    physical: Physical
    name: str = "tiff"

    @property
    def write_unit(self) -> tuple[int, ...]:
        """The chunks tifffile's store exposes: one strip or tile of one plane."""
        return self.read_unit

    @property
    def is_sequence(self) -> bool:
        return len(self.files) > 1

    @cached_property
    def _reader(self) -> PlaneReader:
        """The file's series, opened once per process (not pickled; `open_tiff` leaves the one it
        parsed here, so the process that opened the source does not parse the file again)."""
        return PlaneReader(self.files[0], self.series)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        if not self.is_sequence:
            return self._reader.read(key)
        planes, rest = key[0], key[1:]
        return np.stack([self._plane(z).read(rest) for z in range(*planes.indices(self.shape[0]))])

    def start_read(self, key: tuple[slice, ...]) -> Callable[[], np.ndarray]:
        """Start reading `key` in a background thread (its decoding overlaps the caller's compute,
        as tensorstore's reads do for zarr); the returned function waits for the values."""
        return read_threads().submit(self.__getitem__, key).result

    def _plane(self, z: int) -> PlaneReader:
        """Slice file `z`, from a small per-process cache of open files."""
        with self._lock:
            plane = self._open_planes.pop(z, None)
            if plane is None:
                plane = PlaneReader(self.files[z], 0)
                if plane.shape != self.shape[1:] or plane.dtype != self.dtype:
                    raise ParameterError(
                        f"{self.files[z]} holds {plane.shape} {plane.dtype}; the first slice "
                        f"{self.files[0]} holds {self.shape[1:]} {self.dtype}: slices must all "
                        "match"
                    )
            self._open_planes[z] = plane
            while len(self._open_planes) > OPEN_PLANES:
                self._open_planes.popitem(last=False)[1].close()
            return plane

    @cached_property
    def _open_planes(self) -> OrderedDict[int, PlaneReader]:
        return OrderedDict()

    @cached_property
    def _lock(self) -> threading.Lock:
        return threading.Lock()

    def __getstate__(self) -> dict:
        return {
            k: v for k, v in self.__dict__.items() if k not in ("_reader", "_open_planes", "_lock")
        }

    def fingerprint(self) -> dict:
        """Where the data is and what it holds (its content is in `file_signature`)."""
        files = [os.path.abspath(f) for f in self.files]
        listed = (
            files[0]
            if len(files) == 1
            else hashlib.blake2b("\n".join(files).encode(), digest_size=8).hexdigest()
        )
        return {
            "tiff": listed,
            "files": len(files),
            "series": self.series,
            "shape": self.shape,
            "dtype": str(self.dtype),
            "chunks": self.read_unit,
        }

    def file_signature(self) -> str:
        """Size and mtime_ns of every file: a rewritten file changes it."""
        states = [f"{s.st_size}:{s.st_mtime_ns}" for s in map(os.stat, self.files)]
        return hashlib.blake2b(" ".join(states).encode(), digest_size=8).hexdigest()


_READ_THREADS: dict[int, ThreadPoolExecutor] = {}  # per process id


def read_threads() -> ThreadPoolExecutor:
    """This process's threads for background reads, shared by every TIFF source (a folder of
    small files would otherwise start threads per file)."""
    pool = _READ_THREADS.get(os.getpid())
    if pool is None:
        pool = _READ_THREADS.setdefault(
            os.getpid(), ThreadPoolExecutor(READ_THREADS, thread_name_prefix="tiff-read")
        )
    return pool


def open_series(path: str, series: int) -> zarr.Array:
    """Level 0 of series `series` of the TIFF at `path` as a read-only zarr array."""
    return zarr.open(
        tifffile.imread(path, aszarr=True, series=series, level=0, maxworkers=2), mode="r"
    )


class PlaneReader:
    """Level 0 of one TIFF series, open in this process. A series of single-sample planes (one
    page each) is read straight from its strips and tiles with tifffile's own reader and decoder,
    in the calling thread: only the segments a region covers, each decoded once per read, several
    reads decoding in parallel (2-3x faster than through zarr-python, whose one event-loop thread
    serialises every chunk). Other layouts (RGB samples, planar configurations, hyperstacks
    whose pages are not the planes) go through tifffile's zarr store."""

    def __init__(self, path: str, series: int, tif: tifffile.TiffFile | None = None):
        self.tif = tif if tif is not None else tifffile.TiffFile(path)
        chosen = self.tif.series[series]
        self.keyframe = chosen.keyframe
        self.shape, self.dtype = tuple(chosen.shape), np.dtype(chosen.dtype)
        self.pages = list(chosen.pages)
        planes = self.shape[0] if len(self.shape) == 3 else 1
        direct = (
            self.keyframe.samplesperpixel == 1
            and len(self.keyframe.shape) == 2
            and len(self.shape) in (2, 3)
            and self.shape[-2:] == tuple(self.keyframe.shape)
            and len(self.pages) == planes
            and chosen.transform is None
            and np.dtype(self.keyframe.dtype) == self.dtype
        )
        self.array = None if direct else open_series(path, series)
        for page in self.pages:  # a multi-file OME-TIFF's planes live in several files
            if page is not None:
                page.parent.filehandle.set_lock(True)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunks tifffile's zarr store exposes: one strip or tile of one plane."""
        if self.array is not None:
            return tuple(self.array.chunks)
        return (1,) * (len(self.shape) - 2) + tuple(self.keyframe.chunks[-2:])

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        if self.array is not None:
            return np.asarray(self.array[key])
        if len(self.shape) == 2:
            return self._read_planes([0], *key)[0]
        return self._read_planes(range(*key[0].indices(self.shape[0])), key[1], key[2])

    def _read_planes(self, planes: Sequence[int], rows: slice, columns: slice) -> np.ndarray:
        """Planes `planes`, cut to `rows` and `columns`, from the segments (strips or tiles) they
        cover."""
        keyframe = self.keyframe
        (y0, y1, ystep), (x0, x1, xstep) = (
            rows.indices(self.shape[-2]),
            columns.indices(self.shape[-1]),
        )
        height, width = keyframe.chunks[-2:]
        per_row = keyframe.chunked[-1]
        grid_rows, grid_columns = (
            range(y0 // height, -(-y1 // height)),
            range(x0 // width, -(-x1 // width)),
        )
        wanted = [r * per_row + c for r in grid_rows for c in grid_columns]
        top, left = grid_rows.start * height, grid_columns.start * width
        covered_shape = (len(grid_rows) * height, len(grid_columns) * width)
        out = np.empty(
            (len(planes), len(range(y0, y1, ystep)), len(range(x0, x1, xstep))), self.dtype
        )
        # segments decoded straight into `out` when they cover exactly the region asked for
        direct = (ystep, xstep, y0, x0) == (1, 1, top, left) and out.shape[1:] == covered_shape
        covered = None if direct else np.empty(covered_shape, self.dtype)
        extra = {"jpegheader": keyframe.jpegheader} if keyframe.jpegheader is not None else {}
        for i, z in enumerate(planes):
            page = self.pages[z]
            if page is None:  # a plane the file does not store
                out[i] = keyframe.nodata
                continue
            plane = out[i] if direct else covered
            offsets, counts, handle = page.dataoffsets, page.databytecounts, page.parent.filehandle
            if getattr(page, "jpegtables", None) is not None:
                extra["jpegtables"] = page.jpegtables
            for data, index in handle.read_segments(
                [offsets[j] for j in wanted],
                [counts[j] for j in wanted],
                indices=wanted,
                sort=True,
                lock=handle.lock,
            ):
                r, c = divmod(index, per_row)
                row, column = (r - grid_rows.start) * height, (c - grid_columns.start) * width
                target = plane[row : row + height, column : column + width]
                if data is None or not counts[index]:
                    target[...] = keyframe.nodata
                else:
                    target[...] = keyframe.decode(data, index, _fullsize=True, **extra)[0].reshape(
                        height, width
                    )
            if not direct:
                out[i] = covered[y0 - top : y1 - top : ystep, x0 - left : x1 - left : xstep]
        return out

    def close(self) -> None:
        self.tif.close()
        if self.array is not None:
            self.array.store.close()


def tiff_files(text: str) -> tuple[list[str], int] | None:
    """(files, series) that `text` names, or None when it names no TIFF: a .tif/.tiff file,
    such a file followed by "/<series>", a glob of them, or a folder holding them."""
    if any(c in text for c in "*?["):
        return (
            (tifffile.natural_sorted(glob.glob(text)), 0)
            if text.lower().endswith(TIFF_SUFFIXES)
            else None
        )
    match = re.fullmatch(r"(.+\.tiff?)/(\d+)", text.rstrip("/"), re.IGNORECASE)
    if match:
        return [match.group(1)], int(match.group(2))
    if text.lower().endswith(TIFF_SUFFIXES):
        return [text], 0
    if os.path.isdir(text) and not any(part.endswith((".zarr", ".n5")) for part in text.split("/")):
        files = [f for f in os.listdir(text) if f.lower().endswith(TIFF_SUFFIXES)]
        return (
            ([os.path.join(text, f) for f in tifffile.natural_sorted(files)], 0) if files else None
        )
    return None


def open_tiff(text: str, parameter: str) -> TiffSource | None:
    """The TIFF source `text` names (see `tiff_files`), None when it names no TIFF; a clear error
    for a missing file, an empty glob, a series out of range, a file that is not a TIFF, or slices
    that are not 2-D or not all of one shape and dtype (from their headers: io/tiff_headers.py)."""
    found = tiff_files(text)
    if found is None:
        return None
    files, series = found
    if not files:
        raise FileNotFoundError(f"{parameter}: no TIFF file matches {text!r}")
    if not os.path.isfile(files[0]):
        raise FileNotFoundError(f"{parameter}: no TIFF file at {files[0]!r}")
    try:
        tif = tifffile.TiffFile(files[0])
    except tifffile.TiffFileError as error:
        raise ParameterError(
            f"{parameter}: {files[0]!r} is not a readable TIFF file ({error})"
        ) from None
    try:
        if not 0 <= series < len(tif.series):
            raise ParameterError(
                f"{parameter}: {files[0]!r} has {len(tif.series)} series "
                f"(0-{len(tif.series) - 1}), not series {series}"
            )
        chosen = tif.series[series]
        physical = ome_physical(tif, series, chosen.axes) or imagej_physical(tif, chosen.axes)
        reader = PlaneReader(files[0], series, tif)  # the file parsed once in this process
        stored = reader.array if reader.array is not None else reader
        shape, dtype, chunks = tuple(stored.shape), np.dtype(stored.dtype), reader.chunks
    except BaseException:
        tif.close()
        raise
    if len(files) > 1:
        reader.close()
        if len(shape) != 2:
            raise ParameterError(
                f"{parameter}: a sequence of slices needs 2-D files; {files[0]!r} has shape {shape}"
            )
        check_slices(files, shape, dtype, parameter)
        shape, chunks = (len(files), *shape), (1, *chunks)
        physical = Physical(axes=("z", "y", "x"))
    name = os.path.basename(files[0]) + (f" (+{len(files) - 1} slices)" if len(files) > 1 else "")
    source = TiffSource(tuple(files), series, shape, dtype, chunks, physical or Physical(), name)
    if len(files) == 1:
        source.__dict__["_reader"] = reader  # what the cached property would open again
    return source


def ngff_axes(axes: str) -> tuple[str, ...] | None:
    """tifffile's axes ('ZYX', 'TCZYX', 'YXS') as NGFF names; None when some axis has no NGFF
    meaning (tifffile's 'Q', 'I', ... for unknown or sequence axes)."""
    names = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
    return tuple(names[a] for a in axes) if all(a in names for a in axes) else None


def ome_physical(tif: tifffile.TiffFile, series: int, axes: str) -> Physical | None:
    """Voxel sizes and units of an OME-TIFF series from its OME-XML (None for other files)."""
    if not tif.is_ome or tif.ome_metadata is None:
        return None
    images = [e for e in ElementTree.fromstring(tif.ome_metadata) if local_name(e) == "Image"]
    if series >= len(images):
        return None
    found = [e.attrib for e in images[series] if local_name(e) == "Pixels"]
    pixels: dict[str, Any] = found[0] if found else {}
    names = ngff_axes(axes)
    sizes, units = [], []
    for axis in names or ():
        key, default_unit = OME_SIZES.get(axis, (None, None))
        value = pixels.get(key) if key else None
        sizes.append(float(value) if value is not None else 1.0)
        units.append(
            UNITS.get(str(pixels.get(f"{key}Unit", default_unit))) if value is not None else None
        )
    return Physical(tuple(sizes), tuple(units), names) if names else None


def local_name(element: ElementTree.Element) -> str:
    """An XML element's tag without its namespace ('{http://...}Pixels' -> 'Pixels')."""
    return element.tag.rsplit("}", 1)[-1]


def imagej_physical(tif: tifffile.TiffFile, axes: str) -> Physical | None:
    """Voxel sizes of an ImageJ hyperstack: x and y from the resolution tags (pixels per unit),
    z from 'spacing', in its 'unit' (None for other files)."""
    metadata = tif.imagej_metadata
    names = ngff_axes(axes)
    if not metadata or names is None:
        return None
    tags = tif.pages.first.tags
    unit = UNITS.get(str(metadata.get("unit", "")))
    sizes = {"z": float(metadata.get("spacing", 1.0))}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        if tag in tags:
            numerator, denominator = tags[tag].value
            sizes[axis] = denominator / numerator if numerator else 1.0
    spatial = ("x", "y", "z")
    return Physical(
        tuple(sizes.get(a, 1.0) for a in names),
        tuple(unit if a in spatial else None for a in names),
        names,
    )
