"""Microscopy vendor files (Zeiss CZI, Nikon ND2, Leica LIF, and whatever else an installed bioio
plugin reads) as read-only inputs: `"file.czi"` (scene 0), `"file.czi/2"` (scene 2).

Which reader: CZI through pylibCZIrw (the library bioio-czi wraps) directly, one plane region
per (t, c, z) of a block: `CziReader.read(roi=..., plane=..., scene=...)` decodes only the
subblocks that region touches, each whole (what a part of a subblock costs). So the read unit
is the scene's subblock size, and pyramids default to `preferred_chunks` (one channel x 4
planes): a tile of the memory budget then covers whole subblocks and decodes each once, where
chunks across all channels and planes made it a thin slab re-decoding each subblock (8 times
for 16 planes x 3 channels of 1024^2 subblocks). Every other format through its bioio plugin
(bioio-nd2, bioio-lif, ...): the plugin's lazy dask array, cut to the block and computed in the
calling thread, which decodes the plugin's chunks the block touches (whole frames for ND2 and LIF).
TIFF and OME-TIFF keep our own reader (io/tiff.py); `open_microscopy(path, reader="bioio")`
forces the bioio path on any file.

Axes: the file's T, C, Z, Y, X (RGB samples become c when the file has one channel), minus the
singleton axes the caller does not `keep` (y and x are always kept). Voxel sizes (bioio's
micrometers; CZI's metres converted) and channel names go into `physical`, so pyramids carry
them. File handles are not pickled: each process reopens the file on its first read."""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.source import Physical

MICROSCOPY_PATH = re.compile(r"(.+?\.(?:czi|nd2|lif))(?:/(\d+))?", re.IGNORECASE)
SCENE_PATH = re.compile(r"(.+?)/(\d+)")
OUR_SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5", ".hdf", ".zarr", ".n5", ".json")
AXES = "tczyx"
CHUNK_PLANES = 4  # z depth of the chunks a pyramid of a microscopy file gets by default
CHUNK_VOXELS = 2**18  # and their size (as the default chunks of other inputs: 64**3)
INSTALL_HINT = "install the microscopy extra: pip install 'bioimage-tasks[microscopy]'"


@dataclass(frozen=True, eq=False)
class MicroscopySource:
    """Scene `scene` of a microscopy file, read by `reader` ("pylibczirw" or a bioio plugin
    module such as "bioio_nd2"). `full_shape` is the file's (T, C, Z, Y, X); `kept` the indices
    of the axes this source shows. Opened once per process on first read."""

    file: str
    scene: int
    reader: str
    full_shape: tuple[int, ...]
    kept: tuple[int, ...]
    dtype: np.dtype
    read_unit: tuple[int, ...] | None
    physical: Physical
    origin_xy: tuple[int, int] = (0, 0)  # a CZI scene's top-left in the file's pixel frame
    samples: int = 1  # CZI samples per pixel (3 for BGR), shown as c
    has_scenes: bool = True  # False for a CZI without scenes (read with scene=None)
    name: str = "microscopy"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.full_shape[a] for a in self.kept)

    @property
    def write_unit(self) -> tuple[int, ...] | None:
        return self.read_unit

    @property
    def preferred_chunks(self) -> tuple[int, ...]:
        """Default chunks of a pyramid of this file: one time point and channel each,
        CHUNK_PLANES planes deep, square in y and x (CHUNK_VOXELS in all). Chunks across all
        channels and planes would make a tile of the memory budget a thin y/x slab of every
        plane, and the reader decode each subblock or frame once per slab."""
        planes = min(CHUNK_PLANES, self.full_shape[2]) if 2 in self.kept else 1
        side = 2 ** round(math.log2(CHUNK_VOXELS / planes) / 2)
        chosen = {0: 1, 1: 1, 2: planes, 3: side, 4: side}
        return tuple(chosen[a] for a in self.kept)

    @cached_property
    def _local(self) -> threading.local:
        return threading.local()

    def _handle(self) -> Any:
        """This thread's open reader (pylibCZIrw readers are not shared between threads)."""
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = open_reader(self.file, self.scene, self.reader)
        return handle

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        """The voxels `key` (one slice per shown axis, positive steps) selects."""
        full = [slice(0, 1)] * 5
        for axis, part in zip(self.kept, key):
            full[axis] = part
        ranges = [range(*s.indices(n)) for s, n in zip(full, self.full_shape)]
        if self.reader == "pylibczirw":
            values = read_czi(
                self._handle(),
                self.scene if self.has_scenes else None,
                self.origin_xy,
                self.samples,
                ranges,
                self.dtype,
            )
        else:
            data = self._handle()
            values = np.asarray(
                data[tuple(slice(r.start, r.stop, r.step) for r in ranges)].compute(
                    scheduler="synchronous"
                )
            )
        dropped = tuple(a for a in range(5) if a not in self.kept)
        return values.reshape(
            tuple(n for a, n in enumerate(values.shape) if a not in dropped)
        ).astype(self.dtype, copy=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def fingerprint(self) -> dict:
        return {
            "microscopy": os.path.abspath(self.file),
            "scene": self.scene,
            "reader": self.reader,
            "shape": self.shape,
            "dtype": str(self.dtype),
        }

    def file_signature(self) -> str:
        """Size and mtime_ns of the file: rewriting the file changes it."""
        status = os.stat(self.file)
        return hashlib.blake2b(
            f"{status.st_size}:{status.st_mtime_ns}".encode(), digest_size=8
        ).hexdigest()


def read_czi(
    czi: Any,
    scene: int | None,
    origin_xy: tuple[int, int],
    samples: int,
    ranges: list[range],
    dtype: np.dtype,
) -> np.ndarray:
    """A (t, c, z, y, x) region read plane by plane: one ROI read per (t, c, z), or per (t, z)
    for RGB files whose samples are c (pylibCZIrw returns BGR: reversed to RGB)."""
    t_range, c_range, z_range, y_range, x_range = ranges
    y0, x0 = y_range.start, x_range.start
    height, width = y_range.stop - y0 if y_range else 0, x_range.stop - x0 if x_range else 0
    out = np.empty(tuple(len(r) for r in ranges), dtype)
    if not out.size:
        return out
    roi = (origin_xy[0] + x0, origin_xy[1] + y0, width, height)
    channels = [0] if samples > 1 else list(c_range)
    for i, t in enumerate(t_range):
        for k, z in enumerate(z_range):
            for j, c in enumerate(channels):
                plane = czi.read(roi=roi, plane={"T": t, "C": c, "Z": z}, scene=scene)
                plane = plane[:: y_range.step, :: x_range.step]
                if samples > 1:
                    out[i, :, k] = np.moveaxis(
                        plane[..., ::-1][..., c_range.start : c_range.stop : c_range.step], -1, 0
                    )
                else:
                    out[i, j, k] = plane[..., 0]
    return out


def open_reader(file: str, scene: int, reader: str) -> Any:
    """The open pylibCZIrw reader, or the bioio plugin's lazy (T, C, Z, Y, X) dask array."""
    if reader == "pylibczirw":
        from pylibCZIrw import czi as pyczi

        return pyczi.CziReader(file)
    plugin = plugin_reader(reader)(file)
    plugin.set_scene(scene)
    if "S" in plugin.dims.order:
        data = plugin.get_image_dask_data("TCZYXS")
        import dask.array as da

        return da.moveaxis(
            data[:, 0], -1, 1
        )  # samples as c (the caller refuses C > 1 with samples)
    return plugin.get_image_dask_data("TCZYX")


def plugin_reader(module: str) -> type:
    """The `Reader` class of bioio plugin `module` (e.g. "bioio_nd2")."""
    try:
        return importlib.import_module(module).Reader
    except ImportError as error:
        raise ParameterError(
            f"the bioio plugin {module!r} is not installed ({error}); {INSTALL_HINT}"
        ) from None


def microscopy_path(text: str, force: bool = False) -> tuple[str, int] | None:
    """(file, scene) for 'file.czi', 'file.nd2/1', 'file.lif/3'; with `force`, for any existing
    file (optionally '/<scene>') that is not one of our own formats; else None."""
    match = MICROSCOPY_PATH.fullmatch(text.rstrip("/"))
    if match:
        return match.group(1), int(match.group(2) or 0)
    if os.path.isdir(text) or text.rstrip("/").lower().endswith(OUR_SUFFIXES) and not force:
        return None
    scene_match = SCENE_PATH.fullmatch(text.rstrip("/"))
    if scene_match and os.path.isfile(scene_match.group(1)):
        file, scene = scene_match.group(1), int(scene_match.group(2))
    elif os.path.isfile(text):
        file, scene = text, 0
    else:
        return None
    if not force and (file.lower().endswith(OUR_SUFFIXES) or ".zarr/" in file or ".n5/" in file):
        return None
    return file, scene


def open_microscopy(
    text: str, parameter: str = "input", *, keep: str = "", reader: str = "auto", force: bool = True
) -> MicroscopySource | None:
    """The scene `text` names ('file.czi/2'), its singleton axes dropped except those in `keep`
    (e.g. "c"); `reader` "auto" (CZI by pylibCZIrw, else bioio's plugin for the file), "bioio"
    (bioio's plugin, CZI too) or a plugin module ("bioio_ome_tiff"). None when `text` names no
    such file (without `force`: only .czi, .nd2, .lif and files no other reader of ours takes)."""
    found = microscopy_path(text, force)
    if found is None:
        return None
    file, scene = found
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{parameter}: no file at {file!r}")
    if not set(keep) <= set(AXES):
        raise ParameterError(f"keep must name axes among {AXES!r}, got {keep!r}")
    if reader == "pylibczirw" or reader == "auto" and file.lower().endswith(".czi"):
        from bioimage_tasks.io.czi_metadata import open_czi_scene

        opened = open_czi_scene(file, scene, parameter)
    else:
        opened = open_bioio_scene(file, scene, reader, parameter)
    full_shape, dtype, unit, physical, extra = opened
    kept = tuple(a for a, n in enumerate(full_shape) if n > 1 or AXES[a] in keep + "yx")
    physical = Physical(
        tuple(physical.voxel_size[a] for a in kept),
        tuple(physical.units[a] for a in kept),
        tuple(AXES[a] for a in kept),
        channel_names=physical.channel_names if 1 in kept else None,
    )
    name = os.path.basename(file) + (f"/{scene}" if scene else "")
    return MicroscopySource(
        file,
        scene,
        extra.pop("reader"),
        full_shape,
        kept,
        np.dtype(dtype),
        None if unit is None else tuple(unit[a] for a in kept),
        physical,
        name=name,
        **extra,
    )


def open_bioio_scene(file: str, scene: int, reader: str, parameter: str) -> tuple:
    """(full_shape, dtype, read unit, Physical over t, c, z, y, x, extra fields) from bioio."""
    module = plugin_module(file, parameter) if reader in ("auto", "bioio") else reader
    try:
        plugin = plugin_reader(module)(file)
    except ParameterError:
        raise
    except Exception as error:  # noqa: BLE001 - a plugin's own error for a file it cannot read
        raise ParameterError(
            f"{parameter}: {module} cannot read {file!r} ({type(error).__name__}: {error})"
        ) from None
    if not 0 <= scene < len(plugin.scenes):
        raise ParameterError(
            f"{parameter}: {file!r} has {len(plugin.scenes)} scenes (0-{len(plugin.scenes) - 1}), "
            f"not scene {scene}"
        )
    plugin.set_scene(scene)
    sizes = dict(zip(plugin.dims.order, plugin.dims.shape))
    samples = sizes.get("S", 1)
    if samples > 1 and sizes.get("C", 1) > 1:
        raise ParameterError(
            f"{parameter}: {file!r} has {sizes['C']} channels of {samples} samples each; "
            "only one of the two can be the c axis"
        )
    full_shape = tuple(
        sizes.get(a.upper(), 1) if a != "c" else max(sizes.get("C", 1), samples) for a in AXES
    )
    chunks = open_reader(file, scene, module).chunksize
    pixel = plugin.physical_pixel_sizes
    sizes_um = (1.0, 1.0, pixel.Z, pixel.Y, pixel.X)
    units = tuple(
        "micrometer" if a >= 2 and s is not None else None for a, s in enumerate(sizes_um)
    )
    names = None if samples > 1 else tuple(str(n) for n in plugin.channel_names or ()) or None
    physical = Physical(
        tuple(float(s) if s else 1.0 for s in sizes_um), units, tuple(AXES), channel_names=names
    )
    return full_shape, plugin.dtype, tuple(chunks), physical, {"reader": module}


def plugin_module(file: str, parameter: str) -> str:
    """The module of the installed bioio plugin that reads `file`, or a ParameterError."""
    try:
        import bioio
    except ImportError:
        raise ParameterError(f"{parameter}: {file!r} needs bioio; {INSTALL_HINT}") from None
    try:
        return bioio.BioImage.determine_plugin(file).entrypoint.value.split(":")[0]
    except Exception as error:  # noqa: BLE001 - bioio's UnsupportedFileFormatError and friends
        raise ParameterError(
            f"{parameter}: no installed bioio plugin reads {file!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from None
