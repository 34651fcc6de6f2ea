"""Check that every file of a TIFF slice sequence holds a plane like the first one, from headers
only, before any block runs: a slice of another shape or dtype, or a file that is not a TIFF,
would otherwise fail only when its block runs, after other blocks were written.

Each file's first IFD (image file directory) is read with one read of `HEAD_BYTES` (two or three
where the IFD or a tag value lies further in the file) and reduced to a `header_key`: the tags it
holds and the values that decide the plane's shape and dtype. A file whose key equals the first
file's holds the same plane (tifffile builds a file's series from these tags); any other file
is opened with tifffile to say what differs, and accepted when its series matches after all."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, NamedTuple

import numpy as np
import tifffile

from bioimage_tasks.errors import ParameterError

HEAD_BYTES = 4096  # most writers put the first IFD and its values right after the 8-byte header
CHECK_THREADS = 8  # files read at once: opening a file is latency-bound on network storage
CHECK_BATCH = 256  # files per thread-pool job (a future per file costs as much as its check)
MAX_TAGS = 4096  # more tags in one IFD means a corrupt header
MAX_INTEGERS = 16  # values read of an integer tag (bits per sample of a few samples)
DESCRIPTION_BYTES = 1024  # enough for tifffile's '{"shape": ...}' and ImageJ's images= line
KEY_TAGS = {
    256: "width",
    257: "length",
    258: "bits",
    277: "samples",
    339: "sampleformat",
    270: "description",
}
TYPE_SIZES = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    16: 8,
    17: 8,
    18: 8,
}
INTEGER_FORMATS = {
    1: "B",
    3: "H",
    4: "I",
    6: "b",
    8: "h",
    9: "i",
    13: "I",
    16: "Q",
    17: "q",
    18: "Q",
}


class HeaderReader:
    """Byte ranges of one open file, served from its first `HEAD_BYTES` when they lie there."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.head = handle, handle.read(HEAD_BYTES)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self.head):
            return self.head[offset : offset + size]
        self.handle.seek(offset)
        data = self.handle.read(size)
        if len(data) < size:
            raise ValueError(f"truncated: {size} bytes at offset {offset} lie past the end")
        return data


class HeaderKey(NamedTuple):
    """What a file's first IFD says about its plane (see `header_key`)."""

    tag_codes: tuple[int, ...]
    width: tuple[int, ...] | None
    length: tuple[int, ...] | None
    samples: tuple[int, ...]
    bits: tuple[int, ...]
    sample_format: tuple[int, ...]
    more_ifds: bool
    descriptions: tuple[bytes | None, ...]


def header_key(path: str) -> HeaderKey:
    """What the first IFD of the TIFF at `path` says about its plane: tag codes, width, length,
    samples, bits and sample format per sample, whether more IFDs follow, and the descriptions'
    shape hints. A ValueError (or OSError, struct.error) for a file that is not a TIFF."""
    with open(path, "rb") as handle:
        reader = HeaderReader(handle)
        order = {b"II": "<", b"MM": ">"}.get(reader.head[:2])
        if order is None or len(reader.head) < 8:
            raise ValueError("no TIFF byte-order mark")
        version = struct.unpack(order + "H", reader.head[2:4])[0]
        if version not in (42, 43):
            raise ValueError(f"TIFF version {version}")
        big = version == 43  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        offset_format, offset_size = ("Q", 8) if big else ("I", 4)
        count_format, count_size, entry_size = ("Q", 8, 20) if big else ("H", 2, 12)
        offset = struct.unpack(order + offset_format, reader.read(offset_size, offset_size))[0]
        count = struct.unpack(order + count_format, reader.read(offset, count_size))[0]
        if not 0 < count <= MAX_TAGS:
            raise ValueError(f"the first IFD claims {count} tags")
        entries = reader.read(offset + count_size, count * entry_size)
        next_ifd = reader.read(offset + count_size + count * entry_size, offset_size)
        entries = list(struct.iter_unpack(order + ("HH16s" if big else "HH8s"), entries))
        tags: dict[str, list] = {}  # a tag may repeat: tifffile writes a second description
        for code, kind, field in entries:
            if code in KEY_TAGS:
                value = tag_value(reader, order + offset_format, kind, field)
                tags.setdefault(KEY_TAGS[code], []).append(value)
    first = {name: values[0] for name, values in tags.items()}
    return HeaderKey(
        tuple(code for code, _, _ in entries),
        first.get("width"),
        first.get("length"),
        first.get("samples", (1,)),
        first.get("bits", (1,)),
        first.get("sampleformat", (1,)),
        any(next_ifd),
        tuple(map(description_hint, tags.get("description", []))),
    )


def tag_value(reader: HeaderReader, offset_format: str, kind: int, field: bytes) -> tuple | bytes:
    """A tag's first MAX_INTEGERS integers or DESCRIPTION_BYTES bytes, from the entry's value
    field (`field`: count, then value) or, when they do not fit there, from where it points."""
    count_size = struct.calcsize(offset_format)
    number = struct.unpack(offset_format, field[:count_size])[0]
    inline = field[count_size:]
    total = TYPE_SIZES.get(kind, 1) * number
    if kind in INTEGER_FORMATS:
        number = min(number, MAX_INTEGERS)
        wanted = TYPE_SIZES[kind] * number
    else:
        wanted = min(total, DESCRIPTION_BYTES)
    if total <= len(inline):
        data = inline[:wanted]
    else:
        data = reader.read(struct.unpack(offset_format, inline)[0], wanted)
    if kind in INTEGER_FORMATS:
        return struct.unpack(f"{offset_format[0]}{number}{INTEGER_FORMATS[kind]}", data)
    return bytes(data)


def description_hint(description: bytes) -> bytes | None:
    """The part of an ImageDescription that can change a file's series shape: tifffile's
    '{"shape": [...]}' in full, ImageJ's images= line, or b"ome" for OME-XML; None otherwise."""
    description = description.rstrip(b"\0")
    if description.startswith(b"{"):
        return description
    if description.startswith(b"ImageJ="):
        lines = description.split(b"\n")
        return next((line for line in lines if line.startswith(b"images=")), b"ImageJ")
    return b"ome" if b"<OME" in description else None


def check_slices(
    files: Sequence[str], shape: tuple[int, ...], dtype: np.dtype, parameter: str
) -> None:
    """Refuse (ParameterError naming `parameter` and the first bad file) a sequence whose files do
    not all hold one `shape` plane of `dtype`, as the first file does. Headers only: files whose
    `header_key` equals the first file's pass without tifffile (see module)."""
    reference = safe_key(files[0])
    trusted = reference is not None and not reference.more_ifds  # else each file's series may vary
    batches = [files[start : start + CHECK_BATCH] for start in range(1, len(files), CHECK_BATCH)]
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        found = [
            key
            for keys in pool.map(lambda batch: list(map(safe_key, batch)), batches)
            for key in keys
        ]
    suspects = [f for f, key in zip(files[1:], found) if not trusted or key != reference]
    problems = [
        (f, problem) for f in suspects if (problem := series_problem(f, shape, dtype)) is not None
    ]
    if problems:
        path, problem = problems[0]
        others = f" ({len(problems) - 1} more files differ too)" if len(problems) > 1 else ""
        raise ParameterError(
            f"{parameter}: slice {path!r} {problem}; the first slice {files[0]!r} holds {shape} "
            f"{dtype}: all slices must be 2-D TIFFs of one shape and dtype{others}"
        )


def safe_key(path: str) -> HeaderKey | None:
    """`header_key(path)`, or None for a file whose header cannot be read (tifffile says why)."""
    try:
        return header_key(path)
    except (OSError, ValueError, struct.error):
        return None


def series_problem(path: str, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """What tifffile finds wrong with slice `path` (series 0 not a `shape` plane of `dtype`, or
    no readable TIFF), or None when it matches after all."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            found_shape, found_dtype = tuple(series.shape), np.dtype(series.dtype)
    except Exception as error:  # noqa: BLE001 - tifffile raises many kinds for a non-TIFF
        return f"is not a readable TIFF file ({type(error).__name__}: {error})"
    if found_shape == tuple(shape) and found_dtype == dtype:
        return None
    return f"holds {found_shape} {found_dtype}"
