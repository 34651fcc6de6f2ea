"""OME-Zarr pyramids of images with more than space axes (channels, time, unnamed axes), and the
parameters and outputs a pyramid refuses before anything exists: checked against tensorstore and
the shapes and transforms computed independently here, validated by ome-zarr-models."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from ngff import validate_ngff
from ngff_pyramid_checks import check_with_readers, expected_geometry, tensorstore_level

from flows import pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def files_under(path) -> list[str]:
    """Every file below `path` (relative), to show a refused call created or changed nothing."""
    return sorted(
        os.path.relpath(os.path.join(folder, name), path)
        for folder, _, names in os.walk(path)
        for name in names
    )


def check_levels_against_tensorstore(group, image, cumulative, method="mean"):
    for level, factors in enumerate(cumulative):
        expected = tensorstore_level(image, factors, method)
        np.testing.assert_array_equal(group[f"s{level}"][:], expected)


def test_levels_reduce_only_space_axes_of_a_4d_image(tmp_path, rng):
    image = rng.integers(0, 255, (3, 10, 24, 20), dtype=np.uint8)  # c, z, y, x
    path, voxel = f"{tmp_path}/czyx.zarr", (1.0, 1.0, 0.5, 0.5)
    pyramid_flow(
        image,
        path,
        levels=2,
        axes=("c", "z", "y", "x"),
        voxel_size=voxel,
        units="micrometer",
        chunks=(1, 8, 8, 8),
    )
    cumulative = [(1, 1, 1, 1), (1, 1, 2, 2), (1, 2, 4, 4)]  # y, x to z's size, then z too; c never
    shapes, scales, translations = expected_geometry(image.shape, voxel, cumulative, shift=True)
    assert all(s[0] == 1.0 for s in scales) and all(t[0] == 0.0 for t in translations)
    group = check_with_readers(path, "0.5", shapes, scales, translations)
    check_levels_against_tensorstore(group, image, cumulative)
    space = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    axes = group.attrs["ome"]["multiscales"][0]["axes"]
    assert axes == [{"name": "c", "type": "channel"}, *space]


def test_levels_of_a_5d_ome_zarr_take_its_axes_and_keep_t_and_c(tmp_path, rng):
    """Axes, units and voxel size from the input's NGFF metadata (written here by hand)."""
    image = rng.integers(0, 4000, (2, 2, 8, 16, 12), dtype=np.uint16)
    voxel = (5.0, 1.0, 2.0, 0.5, 0.5)
    source = zarr.open_group(f"{tmp_path}/in.ome.zarr", mode="w", zarr_format=3)
    source.create_array(
        "0",
        shape=image.shape,
        dtype="uint16",
        chunks=(1, 1, 8, 8, 8),
        dimension_names=tuple("tczyx"),
    )[:] = image
    axes = [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        *({"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"),
    ]
    scale = [{"type": "scale", "scale": list(voxel)}]
    source.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        ],
    }
    validate_ngff(f"{tmp_path}/in.ome.zarr")
    path = f"{tmp_path}/out.zarr"
    pyramid_flow(f"{tmp_path}/in.ome.zarr", path, levels=3, ngff_version="0.4")
    cumulative = [(1, 1, 1, 1, 1), (1, 1, 1, 2, 2), (1, 1, 1, 4, 4), (1, 1, 2, 8, 8)]
    shapes, scales, translations = expected_geometry(image.shape, voxel, cumulative, shift=True)
    group = check_with_readers(path, "0.4", shapes, scales, translations)
    assert [s[:2] for s in scales] == [[5.0, 1.0]] * 4
    assert [t[:2] for t in translations] == [[0.0, 0.0]] * 4
    check_levels_against_tensorstore(group, image, cumulative)
    assert group.attrs["multiscales"][0]["axes"] == axes


def test_time_may_be_reduced_by_explicit_factors(tmp_path, rng):
    image = rng.integers(0, 255, (6, 8, 12, 12), dtype=np.uint8)
    path, voxel = f"{tmp_path}/tzyx.zarr", (30.0, 1.0, 1.0, 1.0)
    pyramid_flow(
        image,
        path,
        scale_factors=[(2, 1, 2, 2)],
        axes=("t", "z", "y", "x"),
        method="max",
        voxel_size=voxel,
        units=("second", *("micrometer",) * 3),
    )
    cumulative = [(1, 1, 1, 1), (2, 1, 2, 2)]
    shapes, scales, translations = expected_geometry(image.shape, voxel, cumulative, shift=True)
    group = check_with_readers(path, "0.5", shapes, scales, translations)
    check_levels_against_tensorstore(group, image, cumulative, "max")


REFUSED = [  # (changes to a call on a (12, 16, 16) image with scale_factors=[2], message pattern)
    ({"chunks": (0, 16, 16)}, r"chunks must be 3 integers >= 1, one per axis, got \(0, 16, 16\)"),
    ({"chunks": (-8, 16, 16)}, r"chunks must be 3 integers >= 1"),
    ({"chunks": (8.5, 16, 16)}, r"chunks must be 3 integers >= 1"),
    ({"chunks": 16}, r"chunks must be 3 integers >= 1"),
    (
        {"shards": (12, 12, 12), "chunks": (8, 8, 8)},
        r"shards \(12, 12, 12\) must be a multiple of chunks \(8, 8, 8\)",
    ),
    ({"shards": (0, 16, 16)}, r"shards must be 3 integers >= 1"),
    (
        {"voxel_size": (float("nan"), 1.0, 1.0)},
        r"voxel_size must be finite numbers > 0, got \(nan, 1.0, 1.0\)",
    ),
    ({"voxel_size": (0.0, 1.0, 1.0)}, r"voxel_size must be finite numbers > 0"),
    ({"voxel_size": (1.0, -0.5, 1.0)}, r"voxel_size must be finite numbers > 0"),
    ({"origin": (0.0, float("inf"), 0.0)}, r"origin must be finite numbers, got \(0.0, inf, 0.0\)"),
    ({"origin": (float("nan"), 0.0, 0.0)}, r"origin must be finite numbers"),
    ({"axes": ("z", "z", "x")}, r"axes must be unique names, got \('z', 'z', 'x'\)"),
    ({"axes": ("y", "x", "c")}, r"axes \('y', 'x', 'c'\) are not an NGFF image's"),
    ({"units": "furlong"}, r"units: 'furlong' for axis 'z' \(space\) is not a unit NGFF knows"),
    ({"units": ("second", None, None)}, r"units: 'second' for axis 'z' \(space\) is not a unit"),
    (
        {"levels": -1, "scale_factors": None},
        r"levels must be an integer >= 0 \(0 writes s0 alone\), got -1",
    ),
    ({"levels": True, "scale_factors": None}, r"levels must be an integer >= 0"),
    ({"levels": 1.5, "scale_factors": None}, r"levels must be an integer >= 0"),
    ({"scale_factors": 2}, r"scale_factors must be a list with one entry per level"),
    ({"scale_factors": [2, (2, 0, 2)]}, r"scale_factors, level s2: scale_factor entries must be"),
]


@pytest.mark.parametrize("changes,pattern", REFUSED, ids=[str(c[0])[:40] for c in REFUSED])
def test_bad_pyramid_parameters_are_refused_before_anything_exists(tmp_path, rng, changes, pattern):
    from bioimage_tasks.errors import ParameterError

    image = rng.integers(0, 255, (12, 16, 16), dtype=np.uint8)
    with pytest.raises(ParameterError, match=pattern):
        pyramid_flow(image, f"{tmp_path}/out.zarr", **({"scale_factors": [2]} | changes))
    assert os.listdir(tmp_path) == []


def test_channel_axes_are_never_reduced_and_unnamed_axes_never_guessed(tmp_path, rng):
    from bioimage_tasks.errors import ParameterError

    czyx, tczyx = rng.integers(0, 255, (2, 4, 8, 8), dtype=np.uint8), np.zeros((2, 2, 4, 8, 8))
    named = {"axes": ("c", "z", "y", "x")}
    refused = [
        (
            czyx,
            {"levels": 1},
            r"levels= on a 4-D input needs its axes.*give axes=, e.g. \('c', 'z', 'y', 'x'\)",
        ),
        (tczyx, {"levels": 1}, r"levels= on a 5-D input needs its axes"),
        (
            czyx,
            {"scale_factors": [2], **named},
            r"level s1 has factor 2 on axis 'c', a channel axis; channels are never averaged",
        ),
        (
            czyx,
            {"scale_factors": [(1, 2, 2, 2), (3, 1, 1, 1)]},
            r"level s2 has factor 3 on axis 'c'.*taken to be \('c', 'z', 'y', 'x'\).*give axes=",
        ),
        (
            czyx,
            {"scale_factors": [2], **named, "units": ("micrometer",) * 4},
            r"units: 'micrometer' for axis 'c' \(channel\).*a channel axis has no unit",
        ),
        (czyx[0, 0, 0], {"levels": 1}, r"input has 1 axes; an OME-Zarr \(NGFF\) image has 2 to 5"),
    ]
    for image, kwargs, pattern in refused:
        with pytest.raises(ParameterError, match=pattern):
            pyramid_flow(image, f"{tmp_path}/out.zarr", **kwargs)
    assert os.listdir(tmp_path) == []


def test_output_group_must_be_new_or_this_pyramid(tmp_path, rng):
    from bioimage_tasks.errors import ParameterError

    image = rng.integers(0, 255, (8, 16, 16), dtype=np.uint8)
    zarr.create_array(store=f"{tmp_path}/array.zarr", shape=(4, 4, 4), dtype="uint8")
    os.makedirs(tmp_path / "bare.zarr")  # a container without root metadata, holding an array
    zarr.create_array(store=f"{tmp_path}/bare.zarr/raw", shape=(4, 4, 4), dtype="uint8")[:] = 7
    group = zarr.open_group(f"{tmp_path}/group.zarr", mode="w")
    group.create_array("raw", shape=(4, 4, 4), dtype="uint8")
    group.attrs["note"] = "mine"
    before = files_under(tmp_path)
    for output, pattern in (
        ("array.zarr", r"array.zarr' is an array; a pyramid is a group"),
        ("bare.zarr", r"bare.zarr' holds \['raw'\] besides a pyramid's levels"),
        ("group.zarr", r"group.zarr' holds \['raw'\] besides a pyramid's"),
    ):
        with pytest.raises(ParameterError, match=pattern):
            pyramid_flow(image, f"{tmp_path}/{output}", scale_factors=[2])
    assert files_under(tmp_path) == before
    assert dict(zarr.open_group(f"{tmp_path}/group.zarr", mode="r").attrs) == {"note": "mine"}
    for _ in range(2):  # a group of its own beside raw; and again, into this same pyramid
        pyramid_flow(image, f"{tmp_path}/bare.zarr/image", scale_factors=[2])
    validate_ngff(f"{tmp_path}/bare.zarr/image")


def test_output_paths_are_normalised(tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = rng.integers(0, 255, (8, 16, 16), dtype=np.uint8)
    assert pyramid_flow(image, "./p.zarr/./image/", scale_factors=[2]) == "p.zarr/image"
    assert pyramid_flow(image, "q.zarr//image", scale_factors=[2]) == "q.zarr/image"
    for container in ("p.zarr", "q.zarr"):
        assert sorted(os.listdir(container)) == ["image", "zarr.json"]
        validate_ngff(f"{container}/image")
        np.testing.assert_array_equal(
            zarr.open_array(f"{container}/image/s1", mode="r")[:],
            tensorstore_level(image, (2, 2, 2), "mean"),
        )


@pytest.mark.parametrize(
    "kwargs",
    [{"levels": 0}, {"scale_factors": [], "method": "resize"}],
    ids=["levels=0", "scale_factors=[] resize"],
)
def test_no_levels_below_s0_write_s0_alone(tmp_path, rng, kwargs):
    from prefect import get_client
    from prefect.client.schemas.sorting import ArtifactSort

    image = rng.integers(0, 255, (8, 16, 16), dtype=np.uint8)
    path = f"{tmp_path}/s0.zarr"
    pyramid_flow(image, path, voxel_size=(2.0, 1.0, 1.0), **kwargs)
    group = check_with_readers(path, "0.5", [image.shape], [[2.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]])
    assert list(group.array_keys()) == ["s0"]
    np.testing.assert_array_equal(group["s0"][:], image)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=5)
    summaries = [str(a.data) for a in artifacts if a.key == "pyramid-summary"]
    assert any("s0 alone" in summary and path in summary for summary in summaries)


def test_validate_ngff_refuses_what_ngff_does_not_allow(tmp_path):
    """The helper itself: NaN in the metadata, and duplicate axis names, do not validate."""

    def image(name, scale, axes=("z", "y", "x")):
        group = zarr.open_group(f"{tmp_path}/{name}", mode="w", zarr_format=3)
        group.create_array("s0", shape=(2, 2, 2), dtype="uint8", dimension_names=axes)
        transforms = [{"type": "scale", "scale": scale}]
        datasets = [{"path": "s0", "coordinateTransformations": transforms}]
        group.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [
                {"axes": [{"name": a, "type": "space"} for a in axes], "datasets": datasets}
            ],
        }
        return f"{tmp_path}/{name}"

    validate_ngff(image("good.zarr", [1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="holds NaN, which is not JSON"):
        validate_ngff(image("nan.zarr", [float("nan"), 1.0, 1.0]))
    with pytest.raises(ValueError, match="Axis names must be unique"):
        validate_ngff(image("twice.zarr", [1.0, 1.0, 1.0], ("z", "z", "x")))
