"""Neuroglancer precomputed volumes through tensorstore's `neuroglancer_precomputed` driver.

Paths: `precomputed://<folder>` or `precomputed://s3://bucket/prefix` (read-only http(s) too)
name a volume's scale 0; `precomputed://<folder>/<scale key>` (e.g. `.../8_8_40`, the folder of
that scale's chunks) names another scale. A local folder or an S3 prefix holding an `info` file
is recognised without the prefix. A scale reads as (z, y, x), or (c, z, y, x) with several
channels (precomputed stores x, y, z, channel), from voxel 0 (the scale's `voxel_offset` is its
origin), with its resolution as the voxel size in nanometers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.chunk_files import LOCK_SUFFIX, remove_if_stale
from bioimage_tasks.io.kv import LOCAL_IO, JsonAttributes, LocalLocation, Location
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.precomputed_files import ScaleFiles
from bioimage_tasks.io.source import Physical
from bioimage_tasks.io.urls import StorageOptions, UrlPath

PREFIX = "precomputed://"
RECORDS_DIR = ".bioimage-tasks"  # records.RECORDS_DIR (not imported: records imports io)
URL_SCHEMES = ("s3", "http", "https")


def is_precomputed_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class PrecomputedPath:
    """A precomputed volume: its local folder (`folder`) or URL (`url`), and a scale key
    (None: scale 0)."""

    folder: str | None
    url: UrlPath | None
    scale: str | None = None

    @classmethod
    def parse(
        cls, text: str, parameter: str, options: StorageOptions | dict | None = None
    ) -> PrecomputedPath:
        """The volume `text` names (with or without the prefix); reads nothing."""
        inner = text[len(PREFIX) :] if text.startswith(PREFIX) else text
        inner = inner.removeprefix("file://")
        scheme, found, rest = inner.partition("://")
        if not found:
            if not inner:
                raise ParameterError(
                    f"{parameter}: {PREFIX} needs a folder or an s3:// URL, got {text!r}"
                )
            return cls(os.path.abspath(inner), None)
        if scheme not in URL_SCHEMES:
            raise ParameterError(
                f"{parameter}: {PREFIX} takes a local folder, s3:// or http(s)://, got {text!r}"
            )
        host, _, prefix = rest.partition("/")
        if not host or not prefix.strip("/"):
            raise ParameterError(
                f"{parameter} must be '{PREFIX}{scheme}://bucket/prefix', got {text!r}"
            )
        resolved = StorageOptions.coerce(options).resolved()
        check_reachable(scheme, text, resolved, parameter)
        return cls(None, UrlPath(scheme, host, prefix.strip("/"), "", "precomputed", resolved))

    @property
    def writable(self) -> bool:
        return self.url is None or self.url.writable

    def __str__(self) -> str:
        where = self.folder if self.url is None else str(self.url)
        return PREFIX + where + (f"/{self.scale}" if self.scale else "")

    def location(self) -> Location:
        """The volume's folder, where `info` and our records live."""
        return LocalLocation(self.folder) if self.url is None else self.url.location()

    def kvstore_spec(self) -> dict:
        if self.url is None:
            return {"driver": "file", "path": self.folder + "/"}
        return self.url.location().spec

    def info(self) -> dict | None:
        """The volume's `info` (None if absent or not a precomputed volume)."""
        data = self.location().read("info")
        try:
            info = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return info if isinstance(info, dict) and isinstance(info.get("scales"), list) else None

    def with_scale_from_folder(self) -> PrecomputedPath | None:
        """This path if its folder holds an `info`; else, if the parent's `info` lists the last
        part as a scale key, the parent volume at that scale; else None."""
        if self.info() is not None:
            return self
        if self.url is None:
            parent = PrecomputedPath(os.path.dirname(self.folder), None)
            key = os.path.basename(self.folder)
        else:
            container, _, key = self.url.container.rpartition("/")
            if not container:
                return None
            parent = PrecomputedPath(None, dataclasses.replace(self.url, container=container))
        info = parent.info()
        if info is None or key not in [s.get("key") for s in info["scales"]]:
            return None
        return PrecomputedPath(parent.folder, parent.url, key)

    def spec(self, scale: str | None = None) -> dict:
        """The tensorstore spec of a scale (by key; None: this path's scale, else scale 0)."""
        key = scale or self.scale
        chosen = {"scale_metadata": {"key": key}} if key else {"scale_index": 0}
        return {"driver": "neuroglancer_precomputed", "kvstore": self.kvstore_spec(), **chosen}

    def context(self) -> ts.Context | None:
        return LOCAL_IO if self.url is None else None

    def open(
        self,
        mode: str = "r",
        scale: str | None = None,
        write_empty_chunks: bool = False,
        parameter: str = "input",
    ) -> PrecomputedSource:
        """A scale (default: this path's) as a source (and, with mode "r+", a sink that stores
        all-zero chunks too with `write_empty_chunks`); refusals name `parameter`."""
        info = self.info()
        if info is None:
            raise FileNotFoundError(f"no precomputed volume (an 'info' file) at {self}")
        refuse_gzip_files(self, scale_of(info, scale or self.scale), parameter)
        write = mode != "r" and self.writable
        spec = self.spec(scale) | {"store_data_equal_to_fill_value": write_empty_chunks}
        store = ts.open(spec, open=True, read=True, write=write, context=self.context()).result()
        return source_of(self, store, scale or self.scale)


def scale_of(info: dict, key: str | None) -> dict:
    """The scale of `info` with this key (None: scale 0); {} if there is none (tensorstore
    then says so)."""
    if key is None:
        return info["scales"][0] if info["scales"] else {}
    return next((s for s in info["scales"] if s.get("key") == key), {})


def refuse_gzip_files(path: PrecomputedPath, scale: dict, parameter: str) -> None:
    """ParameterError if a scale keeps its chunk (or shard) files gzip-compressed as `<name>.gz`
    files, as cloud-volume writes them with compress="gzip" on disk: tensorstore finds no
    `<name>` there and would read every chunk as missing, i.e. zeros. Checks a few names only:
    the first entries of a local folder; on object storage, the first file and its `.gz` twin."""
    if not scale or "key" not in scale:
        return
    if path.url is None:
        folder = os.path.join(path.folder, scale["key"])
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e, _ in zip(entries, range(64))]
        except OSError:
            return
        found = next((n for n in names if n.endswith(".gz")), None)
    else:
        first = ScaleFiles.of(scale).names((0, 0, 0), (1, 1, 1))[0]
        stamps = path.url.location(scale["key"]).stamps([first, first + ".gz"])
        found = first + ".gz" if stamps[0] is None and stamps[1] is not None else None
    if found is not None:
        raise ParameterError(
            f"{parameter}: {path} scale {scale['key']} keeps its files gzip-compressed as '.gz' "
            f"files ({found!r}: cloud-volume's compress='gzip' on disk), which are read here as "
            "missing chunks (zeros): decompress them (`gunzip -r` on the scale's folder), or "
            "write the volume with compress=False (gzip: sharded, with data_encoding gzip)"
        )


def check_reachable(scheme: str, text: str, options: StorageOptions, parameter: str) -> None:
    """An s3:// volume needs an endpoint and credentials (as io/urls.py's UrlPath.parse)."""
    if scheme != "s3":
        return
    if not options.endpoint_url:
        raise ParameterError(
            f"{parameter}: no S3 endpoint for {text!r}: set AWS_ENDPOINT_URL or "
            "storage_options=StorageOptions(endpoint_url=...)"
        )
    if not (
        options.anonymous
        or options.profile
        or os.environ.get("AWS_ACCESS_KEY_ID")
        and os.environ.get("AWS_SECRET_ACCESS_KEY")
    ):
        raise ParameterError(
            f"{parameter}: no S3 credentials for {text!r}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or storage_options profile=... or anonymous=True"
        )


def zyx_view(store: ts.TensorStore, num_channels: int) -> ts.TensorStore:
    """(x, y, z, channel) from its origin -> (z, y, x), or (c, z, y, x) with several channels."""
    store = store.translate_to[0]
    return store.T if num_channels > 1 else store[ts.d["channel"][0]].T


def source_of(path: PrecomputedPath, store: ts.TensorStore, key: str | None) -> PrecomputedSource:
    """The source of an opened scale store (any view of it in x, y, z, channel order)."""
    metadata = store.spec().to_json()
    scale = metadata["scale_metadata"]
    channels = int(metadata["multiscale_metadata"]["num_channels"])
    physical = scale_physical(scale, channels)
    where = None if path.url is None else path.url.location(scale["key"])
    return PrecomputedSource(
        zyx_view(store, channels),
        str(PrecomputedPath(path.folder, path.url, scale["key"])),
        where,
        volume=path,
        scale_key=scale["key"],
        physical=physical,
        files=ScaleFiles.of(scale),
    )


def scale_physical(scale: dict, channels: int) -> Physical:
    """Voxel size (nm), units, axes and origin (nm) of a scale, in (c,) z, y, x order."""
    resolution = [float(r) for r in scale["resolution"]][::-1]
    origin = [float(o) * r for o, r in zip(scale.get("voxel_offset", [0, 0, 0])[::-1], resolution)]
    if channels > 1:
        return Physical(
            (1.0, *resolution), (None, *["nanometer"] * 3), ("c", "z", "y", "x"), (0.0, *origin)
        )
    return Physical(tuple(resolution), ("nanometer",) * 3, ("z", "y", "x"), tuple(origin))


@dataclass(frozen=True, eq=False)
class PrecomputedSource(TensorStoreSource):
    """One scale of a precomputed volume, as source and sink. Its folder is the scale's folder
    (`<volume>/<key>`); its attributes (our output token) live under the volume's records."""

    volume: PrecomputedPath | None = None
    scale_key: str = ""
    physical: Physical | None = None
    files: ScaleFiles | None = None

    @property
    def directory(self) -> str | None:
        if self.location is not None:
            return self.location.url
        return os.path.join(self.volume.folder, self.scale_key)

    def fingerprint(self) -> dict:
        return {
            "shape": self.shape,
            "dtype": str(self.dtype),
            "chunks": self.write_unit,
            "precomputed": self.directory,
        }

    @property
    def attrs(self) -> JsonAttributes:
        return JsonAttributes(
            self.volume.location().child(RECORDS_DIR), "scales.json", self.scale_key
        )

    @cached_property
    def lock_layout(self) -> None:
        return None  # chunk files are named by voxel ranges: `start_write` clears their locks

    def start_write(self, key: tuple[slice, ...], values: np.ndarray) -> Callable[[], None]:
        """Start writing `values` at `key`, once stale lock files of a killed writer beside the
        chunk or shard files it covers are gone (io/chunk_files.py)."""
        if self.volume.url is None:
            box = [s.indices(n)[:2] for s, n in zip(key, self.shape)]
            try:
                names = self.files.names([a for a, _ in box], [b for _, b in box])
            except NotImplementedError:  # an unknown sharding hash: files cannot be named here
                names = []
            for name in names:
                remove_if_stale(os.path.join(self.directory, name) + LOCK_SUFFIX)
        return self.store[key].write(values).result

    def box_signatures(self, starts: np.ndarray, stops: np.ndarray) -> list[str | None]:
        """Per box [starts[i], stops[i]), a stamp of the chunk (or shard) files it reads: their
        sizes and modification times, or their ETags on object storage (signatures.py)."""
        where = self.location if self.location is not None else self.directory
        return [self.files.signature(where, a, b) for a, b in zip(starts.tolist(), stops.tolist())]


def open_precomputed(
    data: Any, parameter: str, options: StorageOptions | dict | None
) -> PrecomputedSource | None:
    """The scale `data` names: a `precomputed://` path (FileNotFoundError if no volume is there),
    or a local folder, S3 prefix or scale folder with a precomputed `info`; else None."""
    if not isinstance(data, (str, os.PathLike)):
        return None
    text = os.fspath(data)
    if is_precomputed_url(text):
        found = PrecomputedPath.parse(text, parameter, options).with_scale_from_folder()
        if found is None:
            raise FileNotFoundError(
                f"{parameter}: no precomputed volume (an 'info' file) at {text!r}"
            )
        return found.open("r", parameter=parameter)
    parts = text.rstrip("/").split("/")
    if any(p.endswith((".zarr", ".n5", ".h5", ".hdf5", ".tif", ".tiff")) for p in parts):
        return None
    if "://" in text:
        if text.partition("://")[0] not in URL_SCHEMES:
            return None
    elif not os.path.isdir(text):
        return None
    try:  # anything else is the other formats' to open, and to report
        path = PrecomputedPath.parse(text, parameter, options)
        if path.url is not None:
            path.url._probe(None, ("info",))  # a dead endpoint or missing bucket: quick, raises
        found = path.with_scale_from_folder()
    except (ValueError, OSError):
        return None
    return None if found is None else found.open("r", parameter=parameter)
