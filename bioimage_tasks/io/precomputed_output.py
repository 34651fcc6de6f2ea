"""Writing precomputed volumes: a scale's metadata from an array's shape, chunks, shards and voxel
size (in nanometers, precomputed's only unit), its creation through tensorstore (the `info`
gains the scale), and `PrecomputedTarget`, a single-scale output of `copy`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.grid import chunks_dividing, default_block_shape
from bioimage_tasks.io.options import OutputOptions
from bioimage_tasks.io.precomputed import PrecomputedPath, PrecomputedSource, source_of
from bioimage_tasks.io.precomputed_files import grid_bits, shard_spec
from bioimage_tasks.io.source import Physical

# nanometers per unit of the NGFF space units a caller or an input is likely to use
NM_PER_UNIT = {
    None: 1.0,
    "nanometer": 1.0,
    "micrometer": 1e3,
    "millimeter": 1e6,
    "centimeter": 1e7,
    "meter": 1e9,
    "angstrom": 0.1,
    "picometer": 1e-3,
}
DATA_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
TOKEN_ATTRIBUTE = "bioimage_tasks_token"  # io/outputs.py's
Layout = tuple[tuple[int, ...], tuple[int, ...] | None]


def resolution_nm(
    voxel_size: Sequence[float], units: Sequence[str | None], parameter: str = "units"
) -> list[float]:
    """The (x, y, z) resolution in nm of the last three (z, y, x) axes; no unit counts as nm."""
    result = []
    for size, unit in zip(voxel_size[-3:], units[-3:]):
        if unit not in NM_PER_UNIT:
            raise ParameterError(
                f"{parameter}: a precomputed volume's resolution is in nanometers; unit {unit!r} "
                f"has no conversion here (use one of {sorted(u for u in NM_PER_UNIT if u)})"
            )
        result.append(float(size) * NM_PER_UNIT[unit])
    return result[::-1]


def check_volume(
    shape: Sequence[int], dtype: np.dtype, axes: Sequence[str] | None, parameter: str
) -> int:
    """The channel count of an array a precomputed volume can hold: (z, y, x) or (c, z, y, x)."""
    if len(shape) not in (3, 4) or (len(shape) == 4 and axes is not None and axes[0] != "c"):
        raise ParameterError(
            f"{parameter}: a precomputed volume holds (z, y, x) or (c, z, y, x) arrays, got "
            f"{len(shape)} axes {tuple(axes) if axes else ''}".rstrip()
        )
    if np.dtype(dtype).newbyteorder("=").name not in DATA_TYPES:
        raise ParameterError(
            f"{parameter}: a precomputed volume holds {DATA_TYPES}, not {np.dtype(dtype)}"
        )
    return int(shape[0]) if len(shape) == 4 else 1


def scale_key(resolution: Sequence[float]) -> str:
    """The scale key cloud-volume and igneous use: the resolution, "8_8_40"."""
    return "_".join(f"{int(r)}" if float(r).is_integer() else f"{r:g}" for r in resolution)


def shard_shape(grid: Sequence[int], chunk: Sequence[int], sharding: dict) -> tuple[int, ...]:
    """The (x, y, z) voxels one shard of `sharding` covers (the low Morton bits of each axis),
    capped at the chunk grid as tensorstore's write chunk is; the whole grid where a shard is not
    one box (fewer shard bits than the Morton code has above the low bits).

    >>> spec = {"preshift_bits": 3, "minishard_bits": 2, "shard_bits": 1}
    >>> shard_shape((3, 4, 3), (16, 16, 8), spec)
    (48, 64, 16)
    >>> shard_shape((3, 4, 3), (16, 16, 8), spec | {"shard_bits": 0})
    (48, 64, 24)
    """
    bits = grid_bits(grid)
    order = [axis for bit in range(max(bits, default=0)) for axis in range(3) if bit < bits[axis]]
    low = sharding["preshift_bits"] + sharding["minishard_bits"]
    if low + sharding["shard_bits"] < len(order):
        return tuple(c * n for c, n in zip(chunk, grid))
    return tuple(
        c * min(2 ** order[:low].count(axis), n) for axis, (c, n) in enumerate(zip(chunk, grid))
    )


def sharding_ratio(scale: dict) -> list[int]:
    """The (x, y, z) chunks a shard of `scale` holds along each axis as its low Morton bits
    (preshift and minishard) make it, whatever the hash; capped at the chunk grid."""
    chunk = scale.get("chunk_size") or scale["chunk_sizes"][0]
    bits = grid_bits([-(-n // c) for n, c in zip(scale["size"], chunk)])
    order = [axis for bit in range(max(bits, default=0)) for axis in range(3) if bit < bits[axis]]
    low = scale["sharding"]["preshift_bits"] + scale["sharding"]["minishard_bits"]
    return [2 ** order[:low].count(axis) for axis in range(3)]


def array_layout(scale: dict, channels: int, ndim: int) -> Layout:
    """A scale's (chunks, shards) in array order ((c,) z, y, x)."""
    chunk = tuple(scale.get("chunk_size") or scale["chunk_sizes"][0])
    lead = (channels,) if ndim == 4 else ()
    shards = None
    if scale.get("sharding"):
        grid = [-(-n // c) for n, c in zip(scale["size"], chunk)]
        shards = lead + shard_shape(grid, chunk, scale["sharding"])[::-1]
    return lead + chunk[::-1], shards


def new_scale(
    shape: Sequence[int],
    dtype: np.dtype,
    layout: Layout,
    resolution: Sequence[float],
    offset: Sequence[int],
    labels: bool,
    options: OutputOptions,
    key: str | None = None,
) -> dict:
    """The metadata of a new scale holding `shape` stored as `layout` (array order)."""
    size = [int(n) for n in shape[-3:]][::-1]
    chunk = [int(c) for c in layout[0][-3:]][::-1]
    if options.codec not in (None, "gzip") or (options.codec == "gzip" and layout[1] is None):
        raise ParameterError(
            "output_options.codec: a precomputed volume takes no codec, or gzip with shards "
            f"(the sharded format's data encoding), got {options.codec!r}"
        )
    scale: dict[str, Any] = {
        "key": key or scale_key(resolution),
        "size": size,
        "resolution": list(resolution),
        "chunk_size": chunk,
        "voxel_offset": [int(o) for o in offset],
        "encoding": "raw",
    }
    if labels and np.dtype(dtype).newbyteorder("=").name in ("uint32", "uint64"):
        scale |= {
            "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 8],
        }
    if layout[1] is not None:
        grid = [-(-n // c) for n, c in zip(size, chunk)]
        ratio = [s // c for s, c in zip(list(layout[1][-3:])[::-1], chunk)]
        scale["sharding"] = shard_spec(grid, ratio) | {
            "data_encoding": "gzip" if options.codec else "raw"
        }
    return scale


def new_layout(
    shape: Sequence[int],
    channels: int,
    chunks: tuple[int, ...] | None,
    shards: tuple[int, ...] | None,
    block_shape: Sequence[int] | None = None,
) -> Layout:
    """(chunks, shards) of a new scale: those asked for (shards as the Morton code makes them,
    powers of two of chunks), else chunks of about 64**3 voxels dividing shards and blocks; a
    channel axis is never split (a chunk holds every channel)."""
    lead = (channels,) if len(shape) == 4 else ()
    if chunks is None:
        chunks = default_block_shape(shape, None)
        for unit in (block_shape, shards):
            chunks = chunks if unit is None else chunks_dividing(unit, chunks)
    chunks = lead + tuple(chunks[-3:])
    if shards is None:
        return chunks, None
    size, chunk = list(shape[-3:])[::-1], list(chunks[-3:])[::-1]
    ratio = [max(1, s // c) for s, c in zip(list(shards[-3:])[::-1], chunk)]
    sharding = shard_spec([-(-n // c) for n, c in zip(size, chunk)], ratio)
    grid = [-(-n // c) for n, c in zip(size, chunk)]
    return chunks, lead + shard_shape(grid, chunk, sharding)[::-1]


def create_scale(
    path: PrecomputedPath,
    dtype: np.dtype,
    channels: int,
    scale: dict,
    labels: bool,
    write_empty_chunks: bool,
) -> PrecomputedSource:
    """Open the scale `scale` describes, adding it to the volume's `info` (created if missing)."""
    multiscale = {
        "type": "segmentation" if labels else "image",
        "data_type": np.dtype(dtype).newbyteorder("=").name,
        "num_channels": channels,
    }
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": path.kvstore_spec(),
        "multiscale_metadata": multiscale,
        "scale_metadata": scale,
        "store_data_equal_to_fill_value": write_empty_chunks,
    }
    store = ts.open(spec, open=True, create=True, context=path.context()).result()
    return source_of(path, store, scale["key"])


def existing_scale(info: dict | None, resolution: Sequence[float]) -> dict | None:
    """The scale of `info` with this resolution (cloud-volume writes integers or floats)."""
    for scale in (info or {}).get("scales", []):
        if all(
            math.isclose(float(a), float(b), rel_tol=1e-9)
            for a, b in zip(scale["resolution"], resolution)
        ):
            return scale
    return None


def check_info(
    info: dict | None, dtype: np.dtype, channels: int, where: str, parameter: str
) -> None:
    """An existing volume must hold this data type and channel count."""
    if info is None:
        return
    wanted = (np.dtype(dtype).newbyteorder("=").name, channels)
    if (info.get("data_type"), int(info.get("num_channels", 1))) != wanted:
        raise ParameterError(
            f"{parameter}: {where} exists with data_type {info.get('data_type')} and "
            f"{info.get('num_channels')} channels; this needs {wanted[0]} with {channels}: "
            "choose another path or delete it"
        )


def offset_of(physical: Physical, resolution: Sequence[float]) -> list[int]:
    """The voxel_offset (x, y, z) of an origin in nm that is a whole number of voxels, else 0s."""
    if physical.origin is None or physical.units is None:
        return [0, 0, 0]
    origin = resolution_nm(physical.origin, physical.units)
    voxels = [o / r for o, r in zip(origin, resolution)]
    return (
        [int(round(v)) if math.isclose(v, round(v), abs_tol=1e-6) else 0 for v in voxels]
        if all(math.isclose(v, round(v), abs_tol=1e-6) for v in voxels)
        else [0, 0, 0]
    )


@dataclass(frozen=True)
class PrecomputedTarget:
    """A `precomputed://` output of `copy`: one scale with the input's voxel size (and origin,
    when it is whole voxels), or an existing scale of that resolution."""

    path: PrecomputedPath
    physical: Physical

    def plan(
        self, shape: tuple[int, ...], dtype: np.dtype, block_shape: Any, options: OutputOptions
    ) -> Any:
        from bioimage_tasks.io.outputs import OutputPlan  # outputs imports this module

        channels = check_volume(shape, dtype, self.physical.axes, "output")
        if not self.path.writable:
            raise ParameterError(
                f"output: {self.path} is read-only; write to a local folder or s3://"
            )
        info = self.path.info()
        check_info(info, dtype, channels, str(self.path), "output")
        scale = existing_scale(info, self.resolution(len(shape)))
        if scale is None:
            layout = new_layout(shape, channels, None, options.shards, block_shape)
            new_scale(
                shape, dtype, layout, self.resolution(len(shape)), [0, 0, 0], False, options
            )  # checks
            return OutputPlan(
                shape,
                dtype,
                create_at=self,
                chunks=layout[0],
                options=replace(options, shards=layout[1]),
            )
        sink = self.path.open("r+", scale["key"], options.write_empty_chunks, "output")
        if sink.shape != tuple(shape):
            raise ParameterError(
                f"output: {sink.name} has shape {sink.shape}, expected {tuple(shape)}"
            )
        return OutputPlan(shape, np.dtype(dtype), existing=sink, options=options)

    def resolution(self, ndim: int) -> list[float]:
        voxel = self.physical.voxel_size or (1.0,) * ndim
        return resolution_nm(voxel, self.physical.units or (None,) * ndim)

    def create(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunks: tuple[int, ...],
        shards: tuple[int, ...] | None = None,
        dimension_names: Any = None,
        options: OutputOptions | None = None,
    ) -> PrecomputedSource:
        """Create the scale (the signature of io/urls.py's UrlPath.create, for create_array)."""
        options = options or OutputOptions()
        resolution = self.resolution(len(shape))
        scale = new_scale(
            shape,
            dtype,
            (chunks, shards),
            resolution,
            offset_of(self.physical, resolution),
            False,
            options,
        )
        channels = check_volume(shape, dtype, None, "output")
        return create_scale(self.path, dtype, channels, scale, False, options.write_empty_chunks)

    def __str__(self) -> str:
        return str(self.path)


def precomputed_target(output: Any, physical: Physical, storage_options: Any) -> Any:
    """`output` as a PrecomputedTarget if it is a `precomputed://` path, else as it is."""
    from bioimage_tasks.io.precomputed import is_precomputed_url

    if not is_precomputed_url(output):
        return output
    return PrecomputedTarget(PrecomputedPath.parse(output, "output", storage_options), physical)
