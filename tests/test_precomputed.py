"""Neuroglancer precomputed volumes, against cloud-volume as the independent reference: run in a
venv of its own (its pins clash with ours), created here on first use under `.peer-venvs/` of
the repository and called in a subprocess (tests/cloudvolume_peer.py). Levels are compared with
tensorstore's downsample of the base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from precomputed_volumes import SHARDING, downsampled, image, labels

from bioimage_tasks import copy, pyramid
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io import as_source, physical_of
from bioimage_tasks.io.precomputed_output import new_layout

REPO = Path(__file__).resolve().parent.parent
PEER = REPO / ".peer-venvs" / "cloudvolume"
PEER_SCRIPT = Path(__file__).with_name("cloudvolume_peer.py")


@pytest.fixture(scope="session")
def cloudvolume() -> str:
    """The peer venv's python with cloud-volume, made on first use; a skip (a failure in CI)
    naming why when pip cannot install it."""
    python = PEER / "bin" / "python"
    ready = (
        python.exists()
        and subprocess.run([str(python), "-c", "import cloudvolume"]).returncode == 0
    )
    if not ready:
        made = subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(PEER)], capture_output=True, text=True
        )
        install = (
            made
            if made.returncode
            else subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "cloud-volume"],
                capture_output=True,
                text=True,
            )
        )
        if install.returncode:
            reason = (
                f"cloud-volume could not be installed in {PEER}: {install.stderr.strip()[-500:]}"
            )
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return str(python)


def peer(python: str, **request) -> dict:
    """One cloud-volume call (write or read); the volume's info as cloud-volume sees it."""
    done = subprocess.run(
        [python, str(PEER_SCRIPT), json.dumps(request)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def cv_write(python: str, tmp_path: Path, data: np.ndarray, name: str, **request) -> str:
    np.save(tmp_path / f"{name}.npy", data)
    path = str(tmp_path / name)
    peer(python, op="write", data=str(tmp_path / f"{name}.npy"), path=path, **request)
    return path


def cv_read(python: str, path: str, mip: int) -> tuple[np.ndarray, dict]:
    out = f"{path}-mip{mip}.npy"
    info = peer(python, op="read", path=path, mip=mip, out=out)
    return np.load(out), info


CV_CASES = {
    "raw": dict(layer_type="image", encoding="raw", chunk=[16, 16, 8], offset=[3, 0, 5]),
    "raw-sharded": dict(layer_type="image", encoding="raw", chunk=[16, 16, 8], sharding=SHARDING),
    "cseg": dict(layer_type="segmentation", encoding="compressed_segmentation", chunk=[16, 16, 8]),
    "cseg-sharded": dict(
        layer_type="segmentation",
        encoding="compressed_segmentation",
        chunk=[16, 16, 8],
        sharding=SHARDING,
    ),
    "channels": dict(layer_type="image", encoding="raw", chunk=[16, 16, 8]),
}


@pytest.mark.parametrize("case", list(CV_CASES))
def test_volumes_cloudvolume_wrote_read_exactly(cloudvolume, tmp_path, rng, case):
    data = (
        labels(rng)
        if "cseg" in case
        else image(rng, (3, 20, 50, 40) if case == "channels" else (20, 50, 40))
    )
    path = cv_write(cloudvolume, tmp_path, data, case, resolution=[8, 8, 40], **CV_CASES[case])
    for name in (
        f"precomputed://{path}",
        path,
        f"{path}/8_8_40",
    ):  # prefix, info folder, scale folder
        source = as_source(name)
        np.testing.assert_array_equal(source[tuple(slice(None) for _ in data.shape)], data)
    physical = physical_of(source)
    assert physical.voxel_size[-3:] == (40.0, 8.0, 8.0) and physical.units[-1] == "nanometer"
    if case == "raw":
        assert physical.origin == (200.0, 0.0, 24.0)  # voxel_offset (3, 0, 5) x resolution, z y x
    copied = copy(f"precomputed://{path}", f"{tmp_path}/copy.zarr/a")  # precomputed -> zarr
    np.testing.assert_array_equal(copied[...], data)


def test_block_signatures_follow_the_chunk_files(cloudvolume, tmp_path, rng):
    from bioimage_tasks.signatures import region_signature

    data = image(rng)
    path = cv_write(cloudvolume, tmp_path, data, "v", resolution=[8, 8, 40], **CV_CASES["raw"])
    source = as_source(path)
    near, far = (
        (slice(0, 8), slice(0, 16), slice(0, 16)),
        (slice(16, 20), slice(32, 50), slice(32, 40)),
    )
    before = [region_signature(source, r) for r in (near, far)]
    time.sleep(0.01)
    chunk = os.path.join(path, "8_8_40", "3-19_0-16_5-13")  # x, y, z of the first chunk
    os.utime(chunk, ns=(time.time_ns(), time.time_ns()))
    after = [region_signature(source, r) for r in (near, far)]
    assert None not in before and before[0] != after[0] and before[1] == after[1]


PYRAMIDS = {
    "image": dict(method="mean", chunks=(8, 16, 16), shards=None, labels=False),
    "image-sharded": dict(method="mean", chunks=(4, 8, 8), shards=(8, 16, 16), labels=False),
    "labels-sharded": dict(method="mode", chunks=(8, 16, 16), shards=(16, 32, 32), labels=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PYRAMIDS))
def test_pyramid_outputs_read_by_cloudvolume(cloudvolume, tmp_path, rng, case):
    kind = PYRAMIDS[case]
    base = labels(rng) if kind["labels"] else image(rng)
    volume = str(tmp_path / "vol")
    factors = [(1, 2, 2), (2, 2, 2)]
    pyramid(
        base,
        f"precomputed://{volume}",
        scale_factors=factors,
        method=kind["method"],
        voxel_size=(0.04, 0.008, 0.008),
        units="micrometer",
        chunks=kind["chunks"],
        shards=kind["shards"],
        labels=kind["labels"],
    )
    cumulative = [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    for mip, total in enumerate(cumulative):
        values, info = cv_read(cloudvolume, volume, mip)
        np.testing.assert_array_equal(values, downsampled(base, total, kind["method"]))
        scale = info["scales"][mip]
        assert scale["resolution"] == [8 * total[2], 8 * total[1], 40 * total[0]]
        assert scale["chunk_sizes"] == [list(kind["chunks"][::-1])]
        assert scale["encoding"] == ("compressed_segmentation" if kind["labels"] else "raw")
        assert ("sharding" in scale) == (kind["shards"] is not None)
        sink = as_source(
            f"{volume}/{scale['key']}"
        )  # our shard layout is tensorstore's write chunk
        assert sink.write_unit == (
            new_layout(sink.shape, 1, kind["chunks"], kind["shards"])[1] or kind["chunks"]
        )
        stored = {n for n in os.listdir(f"{volume}/{scale['key']}") if not n.startswith(".")}
        assert stored == set(sink.files.names((0, 0, 0), sink.shape))  # the files signatures stamp
    assert info["type"] == ("segmentation" if kind["labels"] else "image")


@pytest.mark.slow
def test_missing_scales_are_added_in_place(cloudvolume, tmp_path, rng):
    base = image(rng, (32, 64, 48))
    path = cv_write(cloudvolume, tmp_path, base, "v", resolution=[8, 8, 40], **CV_CASES["raw"])
    folder = os.path.join(path, "8_8_40")
    stamps = {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}
    assert (
        pyramid(f"precomputed://{path}", f"precomputed://{path}", levels=2)
        == f"precomputed://{path}"
    )
    assert {
        n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in stamps
    } == stamps  # s0 untouched
    for mip, total in enumerate([(1, 2, 2), (1, 4, 4)], start=1):  # levels plan: x, y first
        values, info = cv_read(cloudvolume, path, mip)
        np.testing.assert_array_equal(values, downsampled(base, total, "mean"))
    assert [s["key"] for s in info["scales"]] == ["8_8_40", "16_16_40", "32_32_40"]
    assert info["scales"][1]["voxel_offset"] == [1, 0, 5]


def test_copy_between_zarr_and_precomputed_keeps_the_voxel_size(cloudvolume, tmp_path, rng):
    import zarr

    base = image(rng)
    pyramid(
        base, f"{tmp_path}/img.zarr", levels=0, voxel_size=(0.5, 0.25, 0.25), units="micrometer"
    )
    copy(
        f"{tmp_path}/img.zarr/s0",
        f"precomputed://{tmp_path}/pc",
        output_options={"shards": (16, 64, 64)},
    )
    values, info = cv_read(cloudvolume, str(tmp_path / "pc"), 0)
    np.testing.assert_array_equal(values, base)
    assert info["scales"][0]["resolution"] == [250, 250, 500] and "sharding" in info["scales"][0]
    back = copy(f"precomputed://{tmp_path}/pc", f"{tmp_path}/back.zarr/a")
    assert isinstance(back, zarr.Array)
    np.testing.assert_array_equal(back[...], base)


def test_jpeg_volumes_read_as_cloudvolume_decodes_them(cloudvolume, tmp_path, rng):
    data = image(rng, (16, 32, 32))
    path = cv_write(
        cloudvolume,
        tmp_path,
        data,
        "j",
        resolution=[4, 4, 4],
        layer_type="image",
        encoding="jpeg",
        chunk=[16, 16, 16],
    )
    decoded, _ = cv_read(cloudvolume, path, 0)  # lossy: the reference is cloud-volume's decode
    np.testing.assert_array_equal(as_source(path)[:, :, :], decoded)


def test_unsharded_gzip_chunk_files_are_refused_not_read_as_zeros(cloudvolume, tmp_path, rng):
    """cloud-volume's compress="gzip" on disk stores `<chunk>.gz` (or `<shard>.shard.gz`) files,
    which tensorstore reads as missing: the volume is refused, naming the problem, before
    anything is written."""
    base = image(rng, (32, 32, 32))
    path = cv_write(
        cloudvolume, tmp_path, base, "gz", resolution=[8, 8, 8], compress="gzip", **CV_CASES["raw"]
    )
    assert any(n.endswith(".gz") for n in os.listdir(os.path.join(path, "8_8_8")))
    info = (Path(path) / "info").read_text()
    for name in (f"precomputed://{path}", path, f"{path}/8_8_8"):
        with pytest.raises(ParameterError, match=r"input: .*'\.gz' files"):
            as_source(name)
    with pytest.raises(ParameterError, match=r"\.gz"):
        pyramid(f"precomputed://{path}", f"precomputed://{path}", levels=1)
    assert (Path(path) / "info").read_text() == info and not (tmp_path / "gz.zarr").exists()
    case = CV_CASES["raw-sharded"] | {"compress": "gzip", "resolution": [8, 8, 8]}
    sharded = cv_write(cloudvolume, tmp_path, base, "sgz", **case)  # `<shard>.shard.gz` files
    assert os.listdir(os.path.join(sharded, "8_8_8")) == ["0.shard.gz"]
    with pytest.raises(ParameterError, match=r"0\.shard\.gz"):
        as_source(sharded)


@pytest.mark.parametrize("kind", ["image", "labels"])
def test_scales_added_in_place_keep_a_sharded_gzip_volume_sharded_gzip(
    cloudvolume, tmp_path, rng, kind
):
    """As igneous's sharded downsampling does, new scales of a sharded scale 0 are sharded, with
    its data encoding (gzip); cloud-volume reads every mip back equal to tensorstore's."""
    base = image(rng, (32, 64, 64)) if kind == "image" else labels(rng, (32, 64, 64))
    case = CV_CASES["raw-sharded" if kind == "image" else "cseg-sharded"]
    path = cv_write(cloudvolume, tmp_path, base, "v", resolution=[8, 8, 8], **case)
    url, method = f"precomputed://{path}", "mean" if kind == "image" else "mode"
    pyramid(url, url, scale_factors=[2, 2], method=method, chunks=(8, 16, 16))
    for mip in (1, 2):
        values, info = cv_read(cloudvolume, path, mip)
        np.testing.assert_array_equal(values, downsampled(base, (2**mip,) * 3, method))
        scale = info["scales"][mip]
        assert scale["sharding"]["data_encoding"] == "gzip"
        assert scale["sharding"]["minishard_index_encoding"] == "gzip"
        assert scale["encoding"] == case["encoding"]
        stored = {n for n in os.listdir(f"{path}/{scale['key']}") if not n.startswith(".")}
        assert stored and all(n.endswith(".shard") for n in stored)
