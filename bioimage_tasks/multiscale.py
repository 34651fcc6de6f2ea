"""OME-Zarr multiscale geometry and metadata, kept apart from any computation: which factors
each level uses, where each level's voxels sit (scale and translation), and the NGFF 0.4 / 0.5
attributes that say so."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

WINDOW_SHIFTED = ("mean", "mode", "min", "max", "median")  # a window's value sits at its centre
AXIS_TYPES = {"t": "time", "c": "channel"}  # NGFF axis types by name; every other name is space
# The units NGFF 0.4 and 0.5 name (UDUNITS-2), per axis type; channel axes have none.
SPACE_UNITS = frozenset(
    (
        "angstrom",
        "attometer",
        "centimeter",
        "decimeter",
        "exameter",
        "femtometer",
        "foot",
        "gigameter",
        "hectometer",
        "inch",
        "kilometer",
        "megameter",
        "meter",
        "micrometer",
        "mile",
        "millimeter",
        "nanometer",
        "parsec",
        "petameter",
        "picometer",
        "terameter",
        "yard",
        "yoctometer",
        "yottameter",
        "zeptometer",
        "zettameter",
    )
)
TIME_UNITS = frozenset(
    (
        "attosecond",
        "centisecond",
        "day",
        "decisecond",
        "exasecond",
        "femtosecond",
        "gigasecond",
        "hectosecond",
        "hour",
        "kilosecond",
        "megasecond",
        "microsecond",
        "millisecond",
        "minute",
        "nanosecond",
        "petasecond",
        "picosecond",
        "second",
        "terasecond",
        "yoctosecond",
        "yottasecond",
        "zeptosecond",
        "zettasecond",
    )
)
UNITS = {"space": SPACE_UNITS, "time": TIME_UNITS, "channel": frozenset()}


def axis_type(name: str) -> str:
    """The NGFF type of axis `name`: "time" for t, "channel" for c, else "space"."""
    return AXIS_TYPES.get(name, "space")


def plan_isotropic_factors(
    voxel_size: Sequence[float], levels: int, axes: Sequence[str] | None = None
) -> list[tuple[int, ...]]:
    """Per-level factors (relative to the previous level) that first halve the finest space axes
    until voxels are as isotropic as possible, then halve all space axes: an axis is halved when
    that brings its voxel within sqrt(2) of the coarsest axis (nearest in log scale), else it
    stays. Channel and time axes (by their names in `axes`; all space without) keep factor 1:
    averaging channels mixes unrelated signals, and time points are not comparable to space.

    >>> plan_isotropic_factors((1.0, 0.25, 0.25), 3)
    [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    >>> plan_isotropic_factors((1.0, 1.0, 1.0, 0.25, 0.25), 2, ("t", "c", "z", "y", "x"))
    [(1, 1, 1, 2, 2), (1, 1, 1, 2, 2)]
    """
    space = [axes is None or axis_type(name) == "space" for name in (axes or voxel_size)]
    current = [size for size, is_space in zip(voxel_size, space) if is_space]
    plan = []
    for _ in range(levels):
        coarsest = max(current)
        factors = [2 if size * 2 <= coarsest * math.sqrt(2) else 1 for size in current]
        if all(f == 1 for f in factors):
            factors = [2] * len(current)
        current = [size * f for size, f in zip(current, factors)]
        chosen = iter(factors)
        plan.append(tuple(next(chosen) if is_space else 1 for is_space in space))
    return plan


def cumulative_factors(level_factors: Sequence[Sequence[int]], ndim: int) -> list[tuple[int, ...]]:
    """Factors of every level relative to s0 (s0 itself included, all ones); without levels,
    s0's alone.

    >>> cumulative_factors([(1, 2, 2), (2, 2, 2)], 3)
    [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    >>> cumulative_factors([], 2)
    [(1, 1)]
    """
    result = [(1,) * ndim]
    for factors in level_factors:
        result.append(tuple(a * b for a, b in zip(result[-1], factors)))
    return result


def level_transform(
    method: str,
    voxel_size: Sequence[float],
    origin: Sequence[float],
    factors: Sequence[int],
    shape0: Sequence[int],
    shape: Sequence[int],
) -> tuple[list[float], list[float]]:
    """(scale, translation) of a level downsampled from s0 by cumulative `factors`.

    Window methods put each output voxel at its window's centre: spacing `factor` voxels and a
    shift of `(factor - 1) / 2` voxels of s0. `stride` keeps each window's first voxel: no shift.
    `resize` (scikit-image) spaces samples `shape0 / shape` apart, centre-aligned, which equals the
    factor whenever it divides the shape.

    >>> level_transform("mean", (2.0, 1.0), (0.0, 0.0), (2, 4), (10, 10), (5, 3))
    ([4.0, 4.0], [1.0, 1.5])
    >>> level_transform("stride", (2.0, 1.0), (0.0, 0.0), (2, 4), (10, 10), (5, 3))
    ([4.0, 4.0], [0.0, 0.0])
    """
    if method == "resize":
        steps = [n0 / n for n0, n in zip(shape0, shape)]
    else:
        steps = [float(f) for f in factors]
    scale = [v * step for v, step in zip(voxel_size, steps)]
    shift = [(step - 1) / 2 if method != "stride" else 0.0 for step in steps]
    translation = [o + v * s for o, v, s in zip(origin, voxel_size, shift)]
    return scale, translation


def axes_metadata(axes: Sequence[str], units: Sequence[str | None]) -> list[dict[str, Any]]:
    """NGFF axes: t is time, c channel, anything else space."""
    result = []
    for name, unit in zip(axes, units):
        axis: dict[str, Any] = {"name": name, "type": axis_type(name)}
        if unit:
            axis["unit"] = unit
        result.append(axis)
    return result


def multiscales_attributes(
    ngff_version: str,
    name: str,
    axes: list[dict[str, Any]],
    transforms: Sequence[tuple[list[float], list[float]]],
    method: str,
    label: bool = False,
    omero: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The group attributes of an OME-Zarr multiscale image with levels s0..sN; with `label`, of
    a label image inside `<image>/labels/`, whose source image is two groups up; `omero` (the
    transitional channel metadata) beside the multiscales where given."""
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": axes,
        "datasets": [
            {
                "path": f"s{level}",
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
            for level, (scale, translation) in enumerate(transforms)
        ],
        "type": method,
        "metadata": {"method": f"bioimage-tasks downsample_flow(method={method!r})"},
    }
    image_label = {"image-label": {"source": {"image": "../../"}}} if label else {}
    extra = {"omero": omero} if omero else {}
    if ngff_version == "0.4":
        if label:
            image_label["image-label"]["version"] = "0.4"
        return {"multiscales": [{"version": "0.4", **multiscale}], **image_label, **extra}
    return {"ome": {"version": "0.5", "multiscales": [multiscale], **image_label, **extra}}


CHANNEL_COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


def omero_channels(names: Sequence[str], value_range: tuple[float, float]) -> dict[str, Any]:
    """NGFF `omero` metadata naming the channels (labels), each with a colour and a display
    window over `value_range` (the dtype's range: nothing is measured).

    >>> omero_channels(["DAPI"], (0, 255))["channels"][0]["label"]
    'DAPI'
    """
    low, high = (float(v) for v in value_range)
    window = {"min": low, "max": high, "start": low, "end": high}
    colors = [CHANNEL_COLORS[i % len(CHANNEL_COLORS)] for i in range(len(names))]
    return {
        "channels": [
            {"label": str(name), "color": color, "active": True, "window": dict(window)}
            for name, color in zip(names, colors)
        ]
    }


def labels_group_attributes(
    ngff_version: str, existing: dict[str, Any], name: str
) -> dict[str, Any]:
    """The `labels` group's attributes listing label image `name` beside those already listed."""
    listed = existing.get("ome", existing).get("labels", [])
    names = listed + [name] if name not in listed else listed
    return (
        {"labels": names} if ngff_version == "0.4" else {"ome": {"version": "0.5", "labels": names}}
    )
