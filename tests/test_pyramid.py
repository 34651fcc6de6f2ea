"""OME-Zarr pyramids: validated by ome-zarr-models, opened by ome-zarr-py's reader, and checked
against shapes, transforms and data computed independently here (math, tensorstore, skimage)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import zarr_input
from ngff import validate_ngff
from ngff_pyramid_checks import check_with_readers, expected_geometry, tensorstore_level
from reference import skimage_downsample

from flows import pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_mean_pyramid_ngff_05_with_shards(tmp_path, rng):
    image = rng.integers(0, 255, (37, 41, 23), dtype=np.uint8)
    path = f"{tmp_path}/image.zarr"
    pyramid_flow(
        image,
        path,
        scale_factors=[(1, 2, 2), 2],
        method="mean",
        voxel_size=(2.0, 0.5, 0.5),
        units="micrometer",
        chunks=(8, 8, 8),
        shards=(16, 16, 16),
        num_workers=2,
    )
    cumulative = [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    shapes, scales, translations = expected_geometry(
        image.shape, (2.0, 0.5, 0.5), cumulative, shift=True
    )
    group = check_with_readers(path, "0.5", shapes, scales, translations)
    assert group["s1"].shards == (16, 16, 16)
    for level, factors in enumerate(cumulative):  # s0 by the cumulative factor, never chained
        np.testing.assert_array_equal(
            group[f"s{level}"][:], tensorstore_level(image, factors, "mean")
        )


def test_label_mode_pyramid_ngff_04_planned_from_voxel_size(tmp_path, rng):
    labels = (2**40 + rng.integers(0, 5, (24, 40, 44))).astype(np.uint64)
    path = f"{tmp_path}/labels.zarr"
    pyramid_flow(
        labels,
        path,
        levels=3,
        method="mode",
        voxel_size=(1.0, 0.25, 0.25),
        ngff_version="0.4",
        chunks=(8, 8, 8),
    )
    cumulative = [(1, 1, 1), (1, 2, 2), (1, 4, 4), (2, 8, 8)]
    shapes, scales, translations = expected_geometry(
        labels.shape, (1.0, 0.25, 0.25), cumulative, shift=True
    )
    group = check_with_readers(path, "0.4", shapes, scales, translations)
    assert group["s1"].metadata.zarr_format == 2
    for level, factors in enumerate(cumulative):
        np.testing.assert_array_equal(
            group[f"s{level}"][:], tensorstore_level(labels, factors, "mode")
        )


def test_stride_and_resize_pyramids(tmp_path, rng):
    image = rng.integers(0, 255, (32, 32, 32), dtype=np.uint8)
    pyramid_flow(image, f"{tmp_path}/stride.zarr", scale_factors=[2, 2], method="stride")
    shapes, scales, translations = expected_geometry(
        image.shape, (1.0,) * 3, [(1,) * 3, (2,) * 3, (4,) * 3], shift=False
    )
    group = check_with_readers(f"{tmp_path}/stride.zarr", "0.5", shapes, scales, translations)
    np.testing.assert_array_equal(group["s2"][:], image[::4, ::4, ::4])
    pyramid_flow(
        image,
        f"{tmp_path}/resize.zarr",
        scale_factors=[2, 2],
        method="resize",
        order=1,
        anti_aliasing=True,
    )
    shapes, scales, translations = expected_geometry(
        image.shape, (1.0,) * 3, [(1,) * 3, (2,) * 3, (4,) * 3], shift=True
    )
    group = check_with_readers(f"{tmp_path}/resize.zarr", "0.5", shapes, scales, translations)
    expected = np.clip(np.rint(skimage_downsample(image, (4, 4, 4), 1, True)), 0, 255)
    np.testing.assert_array_equal(group["s2"][:], expected)


def test_complex_resize_pyramid_keeps_both_parts(tmp_path, rng):
    shape = (20, 22, 18)
    image = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    pyramid_flow(
        image,
        f"{tmp_path}/complex.zarr",
        scale_factors=[2, 2],
        method="resize",
        order=1,
        anti_aliasing=True,
        chunks=(8, 8, 8),
    )
    group = zarr.open_group(f"{tmp_path}/complex.zarr", mode="r")
    for level, factors in ((1, (2, 2, 2)), (2, (4, 4, 4))):
        got = group[f"s{level}"][:]
        assert got.dtype == np.complex64
        for got_part, part in ((got.real, image.real), (got.imag, image.imag)):
            expected = skimage_downsample(part, factors, 1, True).astype(np.float32)
            np.testing.assert_array_equal(got_part, expected)


def test_pyramid_rejects_bad_options(tmp_path, rng):
    image = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="exactly one of levels"):
        pyramid_flow(image, f"{tmp_path}/x.zarr")
    with pytest.raises(ValueError, match="shards need zarr v3"):
        pyramid_flow(image, f"{tmp_path}/x.zarr", levels=1, ngff_version="0.4", shards=(8, 8))
    with pytest.raises(ValueError, match="one entry per axis"):
        pyramid_flow(image, f"{tmp_path}/x.zarr", levels=1, voxel_size=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("ngff_version", ["0.5", "0.4"])
def test_label_image_beside_its_image(tmp_path, rng, ngff_version):
    image = rng.integers(0, 255, (16, 32, 32), dtype=np.uint8)
    cells = rng.integers(0, 4, (16, 32, 32)).astype(np.uint32)
    pyramid_flow(
        image, f"{tmp_path}/image.zarr", scale_factors=[(1, 2, 2)], ngff_version=ngff_version
    )
    pyramid_flow(
        cells,
        f"{tmp_path}/image.zarr/labels/cells",
        scale_factors=[(1, 2, 2)],
        method="mode",
        labels=True,
        ngff_version=ngff_version,
    )
    pyramid_flow(
        cells,
        f"{tmp_path}/image.zarr/labels/nuclei",
        scale_factors=[(1, 2, 2)],
        method="stride",
        labels=True,
        ngff_version=ngff_version,
    )
    validate_ngff(f"{tmp_path}/image.zarr")  # the image, its labels group and both label images
    root = zarr.open_group(f"{tmp_path}/image.zarr", mode="r")
    listed = {"labels": ["cells", "nuclei"]}
    expected = {"ome": {"version": "0.5", **listed}} if ngff_version == "0.5" else listed
    assert dict(root["labels"].attrs) == expected
    attributes = dict(root["labels/cells"].attrs)
    attributes = attributes.get("ome", attributes)
    assert [d["path"] for d in attributes["multiscales"][0]["datasets"]] == ["s0", "s1"]
    image_label = attributes["image-label"]
    assert image_label["source"] == {"image": "../../"}
    np.testing.assert_array_equal(
        root["labels/cells/s1"][:], tensorstore_level(cells, (1, 2, 2), "mode")
    )
    with pytest.raises(ValueError, match="mixes label ids"):
        pyramid_flow(
            cells,
            f"{tmp_path}/image.zarr/labels/bad",
            scale_factors=[2],
            method="mean",
            labels=True,
        )
    with pytest.raises(ValueError, match="labels/<name>"):
        pyramid_flow(cells, f"{tmp_path}/other.zarr", scale_factors=[2], method="mode", labels=True)


@pytest.mark.slow
def test_pyramid_on_a_local_dask_cluster_resumes(tmp_path, rng):
    labels = rng.integers(0, 5, (32, 40, 36)).astype(np.uint32)
    zarr_input(tmp_path, labels, (16, 16, 16))
    options = {
        "scale_factors": [2, 2],
        "method": "mode",
        "job_type": "subprocess",
        "num_workers": 2,
        "chunks": (8, 8, 8),
    }
    pyramid_flow(f"{tmp_path}/in.zarr/raw", f"{tmp_path}/out.zarr", **options)
    chunk = f"{tmp_path}/out.zarr/s2/c/0/0/0"
    before = os.path.getmtime(chunk)
    pyramid_flow(
        f"{tmp_path}/in.zarr/raw", f"{tmp_path}/out.zarr", **options
    )  # a rerun resumes: nothing rewritten
    assert os.path.getmtime(chunk) == before
    group = zarr.open_group(f"{tmp_path}/out.zarr", mode="r")
    for level in range(3):
        np.testing.assert_array_equal(
            group[f"s{level}"][:], tensorstore_level(labels, (2**level,) * 3, "mode")
        )


def test_existing_levels_keep_their_chunks(tmp_path, rng, monkeypatch):
    """Levels that exist with other chunks than the default: the regions (small here, so there
    are many) follow their chunks, no two regions write one, and the levels are exact; asking for
    other chunks is refused first."""
    from bioimage_tasks import pyramid_plan

    monkeypatch.setattr(pyramid_plan, "REGION_VOXELS", 4096)
    monkeypatch.setattr(pyramid_plan, "MIN_REGION_VOXELS", 1024)
    monkeypatch.setattr(pyramid_plan, "TILE_VOXELS", 600)
    base = rng.integers(0, 5, (70, 66, 60)).astype(np.uint16)
    group = str(tmp_path / "p.zarr")
    for level, shape in enumerate([(70, 66, 60), (35, 33, 30), (18, 17, 15)]):
        zarr.create_array(
            store=group,
            name=f"s{level}",
            shape=shape,
            dtype="uint16",
            chunks=(12, 20, 12),
            fill_value=0,
        )
    pyramid_flow(base, group, scale_factors=[2, 2], method="mode", num_workers=2)
    for level, factor in ((1, 2), (2, 4)):
        array = zarr.open_array(store=group, path=f"s{level}", mode="r")
        assert array.chunks == (12, 20, 12)
        np.testing.assert_array_equal(
            array[:], ts.downsample(ts.array(base), [factor] * 3, "mode").read().result()
        )
    with pytest.raises(ValueError, match="exists with chunks"):
        pyramid_flow(base, group, scale_factors=[2, 2], method="mode", chunks=(16, 16, 16))
