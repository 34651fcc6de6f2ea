"""OME-Zarr images as inputs: a group with NGFF `multiscales` metadata (0.4 in zarr v2 `.zattrs`,
0.5 in zarr v3 `zarr.json` under "ome"), label images included, reads its level 0; one of its
levels ("image.ome.zarr/s2") reads as the array it is, with that level's voxel size. Either way
the source carries the voxel size, units, axes and origin the metadata gives."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import zarr

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.source import Physical
from bioimage_tasks.io.zarr_array import ArraySource


def is_group(path: ContainerPath) -> bool:
    """Whether `path` is a zarr group (v3 node_type "group", or a v2 .zgroup)."""
    folder = os.path.join(path.container, path.key)
    if os.path.exists(os.path.join(folder, ".zgroup")):
        return True
    return (
        os.path.exists(os.path.join(folder, "zarr.json"))
        and not os.path.exists(os.path.join(folder, ".zarray"))
        and zarr.open(store=path.container, path=path.key, mode="r").metadata.node_type == "group"
    )


def multiscale_of(attributes: dict[str, Any]) -> dict[str, Any] | None:
    """The first `multiscales` entry of a group's attributes (NGFF 0.5 under "ome", or 0.4)."""
    multiscales = attributes.get("ome", attributes).get("multiscales")
    return multiscales[0] if multiscales else None


def open_ome_zarr(path: ContainerPath, parameter: str) -> ArraySource | None:
    """Level 0 of the OME-Zarr image (or label image) at `path`, or the array at `path` with its
    level's metadata when its parent group is such an image; None for a plain zarr array. A
    group without multiscales metadata is refused, naming what it holds."""
    if path.format != "zarr" or not os.path.isdir(os.path.join(path.container, path.key)):
        return None
    if is_group(path):
        group = zarr.open_group(path.container, path=path.key, mode="r")
        multiscale = multiscale_of(dict(group.attrs))
        if multiscale is None:
            raise ParameterError(
                f"{parameter}: {str(path)!r} is a zarr group without OME-Zarr multiscales "
                "metadata; "
                f"give one of its arrays ({', '.join(sorted(group.array_keys())) or 'none'}) as "
                f"'{path}/<array>'"
            )
        level_key = f"{path.key}/{multiscale['datasets'][0]['path']}".lstrip("/")
        return level_source(ContainerPath(path.container, level_key, "zarr"), multiscale, 0)
    if not path.key:
        return None
    parent_key, _, name = path.key.rstrip("/").rpartition("/")
    parent = ContainerPath(path.container, parent_key, "zarr")
    if not is_group(parent):
        return None
    multiscale = multiscale_of(
        dict(zarr.open_group(parent.container, path=parent.key, mode="r").attrs)
    )
    levels = [d["path"] for d in multiscale["datasets"]] if multiscale else []
    return level_source(path, multiscale, levels.index(name)) if name in levels else None


def level_source(path: ContainerPath, multiscale: dict[str, Any], level: int) -> ArraySource:
    if not path.exists():
        raise FileNotFoundError(
            f"OME-Zarr image lists level {path.key!r}, but no array is there ({path})"
        )
    return replace(path.open("r"), physical=level_physical(multiscale, level))


def level_physical(multiscale: dict[str, Any], level: int) -> Physical:
    """Voxel size, units, axes and origin of level `level`: its own scale and translation, then
    the image's (NGFF applies the dataset's transformations first)."""
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    ndim = len(axes)
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for transforms in (
        multiscale["datasets"][level].get("coordinateTransformations", []),
        multiscale.get("coordinateTransformations", []),
    ):
        for transform in transforms:
            if transform["type"] == "scale":
                scale = [s * f for s, f in zip(scale, transform["scale"])]
                translation = [t * f for t, f in zip(translation, transform["scale"])]
            elif transform["type"] == "translation":
                translation = [t + d for t, d in zip(translation, transform["translation"])]
    return (
        Physical(
            tuple(float(s) for s in scale),
            tuple(a.get("unit") for a in axes),
            tuple(a["name"] for a in axes),
            tuple(float(t) for t in translation),
        )
        if ndim
        else Physical()
    )
