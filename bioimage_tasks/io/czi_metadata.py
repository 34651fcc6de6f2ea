"""What a Zeiss CZI scene holds, from pylibCZIrw (the library bioio-czi wraps): its extent, pixel
type, voxel size (CZI stores metres) and channel names. Reads are in io/bioio_source.py."""

from __future__ import annotations

from typing import Any

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.source import Physical

AXES = "tczyx"
CZI_TYPES = {
    "Gray8": ("uint8", 1),
    "Gray16": ("uint16", 1),
    "Gray32Float": ("float32", 1),
    "Bgr24": ("uint8", 3),
    "Bgr48": ("uint16", 3),
    "Bgr96Float": ("float32", 3),
}
PLANE_CAP = 2048  # read unit along y and x: at most this much (a plane of one large subblock)
INSTALL_HINT = "install the microscopy extra: pip install 'bioimage-tasks[microscopy]'"


def open_czi_scene(file: str, scene: int, parameter: str) -> tuple:
    """(full (T, C, Z, Y, X) shape, dtype, read unit, Physical over t, c, z, y, x, extra
    MicroscopySource fields) of scene `scene` of the CZI `file`."""
    try:
        from pylibCZIrw import czi as pyczi
    except ImportError:
        raise ParameterError(
            f"{parameter}: {file!r} is CZI, read with pylibCZIrw; {INSTALL_HINT}"
        ) from None
    try:
        czi = pyczi.CziReader(file)
    except Exception as error:  # noqa: BLE001 - libCZI's own error for a file that is not CZI
        raise ParameterError(
            f"{parameter}: {file!r} is not a readable CZI file ({type(error).__name__}: {error})"
        ) from None
    try:
        return scene_description(czi, file, scene, parameter)
    finally:
        czi.close()


def scene_description(czi: Any, file: str, scene: int, parameter: str) -> tuple:
    """`open_czi_scene`'s answer from the open reader `czi`."""
    scenes = czi.scenes_bounding_rectangle
    if scenes and scene not in scenes:
        raise ParameterError(
            f"{parameter}: {file!r} has scenes {sorted(scenes)}, not scene {scene}"
        )
    if not scenes and scene != 0:
        raise ParameterError(
            f"{parameter}: {file!r} has no scenes; give the file alone, not scene {scene}"
        )
    rectangle = scenes[scene] if scenes else czi.total_bounding_rectangle
    box = czi.total_bounding_box
    pixel_types = set(czi.pixel_types.values())
    if len(pixel_types) != 1 or next(iter(pixel_types)) not in CZI_TYPES:
        raise ParameterError(
            f"{parameter}: {file!r} has pixel types {sorted(pixel_types)}; one of "
            f"{sorted(CZI_TYPES)} for all channels is supported"
        )
    dtype, samples = CZI_TYPES[pixel_types.pop()]
    counts = {a: box.get(a, (0, 1))[1] - box.get(a, (0, 1))[0] for a in "TCZ"}
    if samples > 1 and counts["C"] > 1:
        raise ParameterError(
            f"{parameter}: {file!r} has {counts['C']} RGB channels; only one of channels "
            "and samples can be the c axis"
        )
    full_shape = (counts["T"], max(counts["C"], samples), counts["Z"], rectangle.h, rectangle.w)
    first = {a: box.get(a, (0, 1))[0] for a in "TCZ"}
    unit = (1, samples, 1, *subblock_unit(czi, rectangle, first))  # a read decodes all samples
    metadata = czi.metadata.get("ImageDocument", {}).get("Metadata", {})
    physical = czi_physical(metadata, None if samples > 1 else counts["C"])
    extra = {
        "reader": "pylibczirw",
        "origin_xy": (rectangle.x, rectangle.y),
        "samples": samples,
        "has_scenes": bool(scenes),
    }
    return full_shape, dtype, unit, physical, extra


def subblock_unit(czi: Any, rectangle: Any, plane: dict[str, int]) -> tuple[int, int]:
    """The (height, width) of the scene's full-resolution subblocks (the most common size in
    its first plane; the mosaic's tiles), at most PLANE_CAP: libCZI decodes a whole subblock
    for any part of it, so regions aligned to this unit decode each subblock once."""
    sizes: dict[tuple[int, int], int] = {}

    def count(_index: int, info: Any) -> bool:
        size = (info.logicalRect.h, info.logicalRect.w)
        sizes[size] = sizes.get(size, 0) + 1
        return len(sizes) < 64  # enough to know the usual size

    roi = (rectangle.x, rectangle.y, rectangle.w, rectangle.h)
    czi.enumerate_subblocks_subset(count, plane=plane, roi=roi, only_layer0=True)
    height, width = max(sizes, key=sizes.get) if sizes else (rectangle.h, rectangle.w)
    return (
        max(1, min(height, rectangle.h, PLANE_CAP)),
        max(1, min(width, rectangle.w, PLANE_CAP)),
    )


def listed(value: Any) -> list:
    """A metadata entry that is one dict or a list of them, as a list."""
    return value if isinstance(value, list) else [] if value is None else [value]


def czi_physical(metadata: dict, channels: int | None) -> Physical:
    """Voxel sizes (metres in the file, micrometers here) and channel names (when `channels`
    names match the channel count)."""
    distances = listed(metadata.get("Scaling", {}).get("Items", {}).get("Distance"))
    metres = {d.get("@Id", "").lower(): float(d["Value"]) for d in distances if d.get("Value")}
    sizes = tuple(metres[a] * 1e6 if metres.get(a) else 1.0 for a in AXES)
    units = tuple("micrometer" if metres.get(a) else None for a in AXES)
    dims = metadata.get("Information", {}).get("Image", {}).get("Dimensions", {})
    entries = listed((dims.get("Channels") or {}).get("Channel"))
    names = tuple(
        str(e.get("@Name") or e.get("Name") or e.get("@Id", f"Channel:{i}"))
        for i, e in enumerate(entries)
    )
    return Physical(
        sizes,
        units,
        tuple(AXES),
        channel_names=names if channels and len(names) == channels else None,
    )
