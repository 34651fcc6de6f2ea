"""Pyramid output formats other than OME-Zarr (pyramid_op.py writes OME-Zarr groups itself):
a neuroglancer precomputed volume, one scale per level. `PrecomputedOutput` stands where
pyramid_op.py has an OME-Zarr group path, and answers its few format questions: the levels'
layouts, the level arrays, where records and staging live, and what `complete` writes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.options import OutputOptions
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.precomputed import PrecomputedPath, PrecomputedSource, is_precomputed_url
from bioimage_tasks.io.precomputed_output import (
    TOKEN_ATTRIBUTE,
    array_layout,
    check_info,
    check_volume,
    create_scale,
    existing_scale,
    new_layout,
    new_scale,
    resolution_nm,
    sharding_ratio,
)
from bioimage_tasks.io.urls import UrlPath

Layout = tuple[tuple[int, ...], tuple[int, ...] | None]


@dataclass(eq=False)
class PrecomputedOutput:
    """A pyramid written as a precomputed volume: level k is the scale of s0's resolution times
    its cumulative factor (key "x_y_z" in nm, as cloud-volume names scales), an existing scale of
    that resolution is reused; s0's `voxel_offset` is the origin in whole voxels."""

    path: PrecomputedPath
    labels: bool
    options: OutputOptions
    scales: list[dict] = field(default_factory=list)
    existing: list[bool] = field(default_factory=list)
    channels: int = 1

    def __str__(self) -> str:
        return str(self.path)

    def check(self) -> None:
        """A writable place that is new, or a precomputed volume (ParameterError otherwise)."""
        if not self.path.writable:
            raise ParameterError(
                f"output_group: {self.path} is read-only; write to a local folder or s3://"
            )
        if self.path.url is None and os.path.isdir(self.path.folder) and self.path.info() is None:
            held = sorted(n for n in os.listdir(self.path.folder) if not n.startswith("."))
            if held:
                raise ParameterError(
                    f"output_group {self.path} is a folder holding {held[:5]}, not a precomputed "
                    "volume: choose a new folder"
                )

    def level_layouts(
        self,
        source: Any,
        shapes: Sequence[tuple[int, ...]],
        cumulative: Sequence[tuple[int, ...]],
        geometry: Any,
        chunks: tuple[int, ...] | None,
        shards: tuple[int, ...] | None,
    ) -> list[Layout]:
        """Each level's (chunks, shards), its scale planned (an existing one checked); refusals
        name the parameter, before anything is written."""
        dtype = source.dtype
        self.channels = check_volume(shapes[0], dtype, geometry.axes, "input")
        info = self.path.info()
        check_info(info, dtype, self.channels, str(self.path), "output_group")
        encoding, sharded = self.follow(info), self.follow_sharding(info)
        base = resolution_nm(geometry.voxel_size, geometry.units)
        offset = offset_voxels(geometry, base)
        layouts = []
        for shape, factors in zip(shapes, cumulative):
            xyz = list(factors[-3:])[::-1]
            resolution = [r * f for r, f in zip(base, xyz)]
            found = existing_scale(info, resolution)
            if found is not None:
                layouts.append(self.reuse(found, shape, chunks))
                continue
            layout = new_layout(shape, self.channels, chunks, shards)
            if shards is None and sharded is not None:  # shards like scale 0's
                shards_like = [c * r for c, r in zip(layout[0][-3:], sharded[0][::-1])]
                lead = layout[0][:-3]
                layout = new_layout(shape, self.channels, layout[0], lead + tuple(shards_like))
            level_offset = [o // f for o, f in zip(offset, xyz)]
            scale = new_scale(
                shape, dtype, layout, resolution, level_offset, self.labels, self.options
            )
            if "sharding" in scale and sharded is not None and self.options.codec is None:
                scale["sharding"] |= sharded[1]
            self.scales.append(scale if encoding is None else encoding_of(scale, encoding))
            self.existing.append(False)
            layouts.append(layout)
        return layouts

    def follow(self, info: dict | None) -> dict | None:
        """An existing volume's new scales take its type and, as igneous's do, its scale 0's
        encoding (raw or compressed_segmentation) and sharding (follow_sharding); None for a
        new volume."""
        if not info or not info["scales"]:
            return None
        self.labels = info.get("type") == "segmentation"
        first = info["scales"][0]
        if first.get("encoding") not in ("raw", "compressed_segmentation"):
            return None
        keys = ("encoding", "compressed_segmentation_block_size")
        return {key: first[key] for key in keys if key in first}

    def follow_sharding(self, info: dict | None) -> tuple[list[int], dict] | None:
        """A sharded scale 0's chunks per shard (x, y, z) and its data and index encodings,
        which new scales take unless `shards` or a codec are given; None if it is unsharded."""
        first = ((info or {}).get("scales") or [{}])[0]
        if not first.get("sharding"):
            return None
        keys = ("data_encoding", "minishard_index_encoding")
        return sharding_ratio(first), {k: first["sharding"][k] for k in keys}

    def reuse(self, scale: dict, shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> Layout:
        """An existing scale's layout; it must have the level's size and the chunks asked."""
        size = list(shape[-3:])[::-1]
        if list(scale["size"]) != size:
            raise ParameterError(
                f"output_group: scale {scale['key']} of {self.path} has size {scale['size']} "
                f"(x, y, z); this level needs {size}: choose another output_group"
            )
        layout = array_layout(scale, self.channels, len(shape))
        if chunks is not None and tuple(chunks[-3:]) != layout[0][-3:]:
            raise ParameterError(
                f"output_group: scale {scale['key']} of {self.path} has chunks {layout[0]}, "
                f"not {tuple(chunks)}: leave chunks out, or choose another output_group"
            )
        self.scales.append(scale)
        self.existing.append(True)
        return layout

    def level_array(self, level: int, dtype: np.dtype, options: OutputOptions) -> PrecomputedSource:
        """Level `level`'s scale, added to the volume if missing (with a fresh identity token)."""
        scale = self.scales[level]
        if self.existing[level]:
            return self.path.open("r+", scale["key"], options.write_empty_chunks, "output_group")
        sink = create_scale(
            self.path, dtype, self.channels, scale, self.labels, options.write_empty_chunks
        )
        sink.set_attribute(TOKEN_ATTRIBUTE, os.urandom(16).hex())
        return sink

    def is_own_s0(self, input: Any) -> bool:
        """Whether `input` names this volume's scale 0 (its missing scales are then added)."""
        if not isinstance(input, (str, os.PathLike)):
            return False
        try:
            named = PrecomputedPath.parse(
                os.fspath(input), "input", self.path.url and self.path.url.options
            )
        except ParameterError:
            return False
        info = self.path.info()
        if (named.folder, str(named.url)) != (self.path.folder, str(self.path.url)) or not info:
            found = named.with_scale_from_folder()
            if found is None or (found.folder, str(found.url)) != (
                self.path.folder,
                str(self.path.url),
            ):
                return False
            named = found
        return named.scale in (None, info["scales"][0]["key"])

    def group(self) -> tuple[None, str | Any]:
        """No group metadata; records and leases live in the volume's folder."""
        if self.path.url is None:
            os.makedirs(self.path.folder, exist_ok=True)
            return None, self.path.folder
        return None, self.path.location()

    def records_path(self) -> ContainerPath | UrlPath:
        """The volume's folder as a zarr path: staging arrays go under its records."""
        if self.path.url is None:
            return ContainerPath(self.path.folder, "", "zarr")
        url = self.path.url
        return UrlPath(url.scheme, url.host, url.container, "", "zarr", url.options)

    def complete(self) -> str:
        """The `info` was written as each scale was added: nothing is left to write."""
        return str(self.path)


def encoding_of(scale: dict, encoding: dict) -> dict:
    """`scale` with `encoding`'s encoding keys in place of its own."""
    scale = {k: v for k, v in scale.items() if k != "compressed_segmentation_block_size"}
    return scale | encoding


def offset_voxels(geometry: Any, resolution: Sequence[float]) -> list[int]:
    """s0's voxel_offset (x, y, z): the origin in whole voxels, else 0."""
    origin = resolution_nm(geometry.origin, geometry.units)
    voxels = [o / r for o, r in zip(origin, resolution)]
    if all(abs(v - round(v)) < 1e-6 for v in voxels):
        return [int(round(v)) for v in voxels]
    return [0, 0, 0]


def precomputed_output(
    output_group: Any, storage_options: Any, labels: bool, options: OutputOptions
) -> PrecomputedOutput | None:
    """The checked precomputed output of a pyramid, or None if `output_group` names none."""
    if not is_precomputed_url(output_group):
        return None
    output = PrecomputedOutput(
        PrecomputedPath.parse(output_group, "output_group", storage_options), labels, options
    )
    output.check()
    return output
