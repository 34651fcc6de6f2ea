"""Checks shared by the OME-Zarr pyramid tests: each level's shape, scale and translation computed
independently here (math), the pyramid opened by ome-zarr-py's reader and validated by
ome-zarr-models, and a level computed by tensorstore."""

from __future__ import annotations

import math

import tensorstore as ts
import zarr
from ngff import validate_ngff
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader


def expected_geometry(shape, voxel, cumulative, shift: bool):
    shapes = [tuple(math.ceil(n / f) for n, f in zip(shape, c)) for c in cumulative]
    scales = [[v * f for v, f in zip(voxel, c)] for c in cumulative]
    translations = [
        [v * (f - 1) / 2 if shift else 0.0 for v, f in zip(voxel, c)] for c in cumulative
    ]
    return shapes, scales, translations


def check_with_readers(path, ngff_version, shapes, scales, translations):
    group = zarr.open_group(path, mode="r")
    assert ("ome" in group.attrs) == (ngff_version == "0.5")
    validate_ngff(path)  # raises on invalid metadata
    node = list(Reader(parse_url(path))())[0]
    assert [tuple(level.shape) for level in node.data] == shapes
    transforms = node.metadata["coordinateTransformations"]
    assert [t[0]["scale"] for t in transforms] == scales
    assert [t[1]["translation"] for t in transforms] == translations
    return group


def tensorstore_level(s0, factors, method):
    return ts.downsample(ts.array(s0), list(factors), method).read().result()
