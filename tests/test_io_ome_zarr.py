"""OME-Zarr images as inputs: a multiscales group (NGFF 0.4 written by ome-zarr-py, 0.5 written
by our pyramid_flow) reads its level 0; a level path reads that level with its own voxel size;
label images likewise; pyramid_flow takes voxel size, units and axes from the metadata."""

from __future__ import annotations

import numpy as np
import pytest
import tensorstore as ts
import zarr
from ome_zarr.writer import write_image

from bioimage_tasks.io import as_source
from flows import copy_flow, pyramid_flow


@pytest.fixture
def ome_zarr_04(tmp_path, rng):
    """An NGFF 0.4 image (zarr v2) written by ome-zarr-py, voxel (3, 0.5, 0.5) micrometer, with a
    second level (1, 2, 2), and an image-wide translation of (10, 0, 0) added to its metadata."""
    image = rng.integers(0, 255, (24, 64, 48), dtype=np.uint8)
    path = str(tmp_path / "image.ome.zarr")
    group = zarr.open_group(path, mode="w", zarr_format=2)
    write_image(
        image,
        group,
        scale_factors=[{"z": 1, "y": 2, "x": 2}],
        axes="zyx",
        scale={"z": 3.0, "y": 0.5, "x": 0.5},
        axes_units=dict.fromkeys("zyx", "micrometer"),
    )
    multiscales = group.attrs["multiscales"]
    multiscales[0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1.0, 1.0, 1.0]},
        {"type": "translation", "translation": [10.0, 0.0, 0.0]},
    ]
    group.attrs["multiscales"] = multiscales
    return path, image


def test_ngff_04_group_reads_level_0_with_its_metadata(ome_zarr_04):
    path, image = ome_zarr_04
    source = as_source(path)
    np.testing.assert_array_equal(source[(slice(None),) * 3], image)
    assert source.physical.voxel_size == (3.0, 0.5, 0.5) and source.physical.origin == (
        10.0,
        0.0,
        0.0,
    )
    assert source.physical.axes == ("z", "y", "x") and source.physical.units == ("micrometer",) * 3
    level = as_source(f"{path}/s1")
    assert level.physical.voxel_size == (3.0, 1.0, 1.0) and level.physical.origin == (
        10.0,
        0.25,
        0.25,
    )


@pytest.mark.usefixtures("prefect_server")
def test_pyramid_of_an_ome_zarr_image_keeps_its_geometry(ome_zarr_04, tmp_path):
    path, image = ome_zarr_04
    out = f"{tmp_path}/again.ome.zarr"
    pyramid_flow(path, out, levels=2, method="mean", chunks=(16, 16, 16))
    multiscale = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]
    assert [(a["name"], a.get("unit")) for a in multiscale["axes"]] == [
        ("z", "micrometer"),
        ("y", "micrometer"),
        ("x", "micrometer"),
    ]
    # voxel (3, .5, .5): (1, 2, 2) twice brings x/y to 2, still finer than z's 3
    s2 = multiscale["datasets"][2]["coordinateTransformations"]
    assert s2 == [
        {"type": "scale", "scale": [3.0, 2.0, 2.0]},
        {"type": "translation", "translation": [10.0, 0.75, 0.75]},
    ]
    expected = ts.downsample(ts.array(image), [1, 4, 4], "mean").read().result()
    np.testing.assert_array_equal(zarr.open_array(f"{out}/s2", mode="r")[:], expected)
    # the caller's values win over the metadata
    pyramid_flow(
        path,
        f"{tmp_path}/given.ome.zarr",
        scale_factors=[2],
        voxel_size=(1.0, 1.0, 1.0),
        units="nanometer",
    )
    given = zarr.open_group(f"{tmp_path}/given.ome.zarr", mode="r").attrs["ome"]["multiscales"][0]
    assert given["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0]
    assert {a["unit"] for a in given["axes"]} == {"nanometer"}


@pytest.mark.usefixtures("prefect_server")
def test_ngff_05_levels_and_label_images_from_our_pyramid(tmp_path, rng):
    image = rng.integers(0, 1000, (32, 40, 36), dtype=np.uint16)
    cells = rng.integers(0, 4, image.shape, dtype=np.uint32)
    root = f"{tmp_path}/img.ome.zarr"
    pyramid_flow(
        image,
        root,
        scale_factors=[2, 2],
        method="mean",
        voxel_size=(2.0, 1.0, 1.0),
        units="micrometer",
    )
    pyramid_flow(
        cells,
        f"{root}/labels/cells",
        scale_factors=[2],
        method="mode",
        labels=True,
        voxel_size=(2.0, 1.0, 1.0),
        units="micrometer",
    )
    np.testing.assert_array_equal(as_source(root)[(slice(None),) * 3], image)
    level = as_source(
        f"{root}/s1"
    )  # a level is still a plain array path, now with its level's geometry
    assert level.physical.voxel_size == (4.0, 2.0, 2.0) and level.physical.origin == (1.0, 0.5, 0.5)
    np.testing.assert_array_equal(
        level[(slice(None),) * 3], ts.downsample(ts.array(image), [2] * 3, "mean").read().result()
    )
    labels = as_source(f"{root}/labels/cells")
    np.testing.assert_array_equal(labels[(slice(None),) * 3], cells)
    assert labels.physical.voxel_size == (2.0, 1.0, 1.0)
    copied = copy_flow(f"{root}/labels/cells", f"{tmp_path}/copy.zarr/cells")
    np.testing.assert_array_equal(copied[:], cells)


def test_a_group_without_multiscales_is_refused(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("raw", shape=(4, 4), dtype="uint8")
    with pytest.raises(
        ValueError, match="without OME-Zarr multiscales metadata; give one of its arrays \\(raw\\)"
    ):
        as_source(str(tmp_path / "plain.zarr"))
    assert as_source(str(tmp_path / "plain.zarr/raw")).physical is None
