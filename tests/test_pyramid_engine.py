"""The one-read pyramid engine: every level equals tensorstore's downsample of the base by the
level's cumulative factor, for every window method and dtype, with regions, tiles and staged
levels made small so that a small volume has many of each; each base voxel is read once; an
existing s0 is not copied; a killed run resumes only the regions it had not finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import zarr
from helpers import records_dir, wait_for, zarr_input
from pyramid_references import assert_same_bits, nan_floats, tensorstore_levels

from bioimage_tasks import pyramid_plan
from bioimage_tasks.io import as_source
from bioimage_tasks.kernels.pyramid import cumulative_products
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import RunnerConfig
from flows import pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def small_regions(monkeypatch):
    """Regions of a few thousand voxels and tiles of a few hundred: many regions per volume,
    several tiles per region, and levels staged whenever their chunks span regions."""
    monkeypatch.setattr(pyramid_plan, "REGION_VOXELS", 4096)
    monkeypatch.setattr(pyramid_plan, "MIN_REGION_VOXELS", 1024)
    monkeypatch.setattr(pyramid_plan, "TILE_VOXELS", 600)


@dataclass(frozen=True)
class CountingSource:
    """A base that counts how often each voxel is read."""

    data: np.ndarray
    reads: np.ndarray

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    write_unit = property(lambda self: None)

    def fingerprint(self) -> dict:
        return as_source(self.data).fingerprint()

    def __getitem__(self, key):
        self.reads[key] += 1
        return self.data[key]


CASES = {  # name: (dtype, method, shape, scale factors per level)
    "mean-uint8-anisotropic": ("uint8", "mean", (37, 41, 23), [(1, 2, 2), 2, (2, 2, 1)]),
    "mean-uint16": ("uint16", "mean", (33, 20, 47), [2, 2, 2]),
    "mean-int32-negative": ("int32", "mean", (19, 30, 28), [(2, 3, 1), 2]),
    "mean-float32": ("float32", "mean", (30, 26, 17), [2, 2]),
    "mode-uint64-above-2**53": ("uint64", "mode", (36, 29, 40), [2, 2, 2]),
    "median-int16": ("int16", "median", (25, 34, 21), [(1, 2, 2), 2]),
    "mode-bool": ("bool", "mode", (22, 27, 31), [2, 2]),
    "min-uint8": ("uint8", "min", (29, 31, 18), [2, (1, 3, 2)]),
    "max-uint16": ("uint16", "max", (27, 20, 33), [3, 2]),
    "stride-uint32": ("uint32", "stride", (35, 28, 30), [2, 2, 2]),
}


def labels_like(rng, shape, dtype):
    """Blocky labels (so windows are uniform, mixed, and mixed at some levels only) plus noise."""
    coarse = rng.integers(0, 5, tuple(-(-n // 3) for n in shape))
    blocky = np.kron(coarse, np.ones((3, 3, 3), np.int64))[tuple(slice(0, n) for n in shape)]
    noise = rng.random(shape) < 0.05
    values = np.where(noise, rng.integers(0, 5, shape), blocky)
    if dtype == "bool":
        return values % 2 == 1
    if dtype == "uint64":
        return (2**60 + values).astype(np.uint64)
    if dtype.startswith("int"):
        return (values * 1000 - 2000).astype(dtype)
    return (values * 40).astype(dtype)


@pytest.mark.parametrize("case", CASES)
def test_every_level_exact_and_the_base_read_once(tmp_path, rng, small_regions, case):
    dtype, method, shape, factors = CASES[case]
    base = (
        labels_like(rng, shape, dtype)
        if method in ("mode", "median")
        else (rng.random(shape) * 200).astype(dtype)
        if dtype.startswith("float")
        else rng.integers(0, 200, shape).astype(dtype)
    )
    reads = np.zeros(shape, np.int64)
    path = f"{tmp_path}/pyramid.zarr"
    pyramid_flow(
        CountingSource(base, reads),
        path,
        scale_factors=factors,
        method=method,
        chunks=(4, 4, 4),
        shards=(8, 8, 8),
        num_workers=2,
        job_config=RunnerConfig(memory_budget=2**20),
    )
    group = zarr.open_group(path, mode="r")
    cumulative = [
        (1, 1, 1),
        *cumulative_products([f if isinstance(f, tuple) else (f,) * 3 for f in factors]),
    ]
    for level, expected in enumerate(tensorstore_levels(base, cumulative, method)):
        np.testing.assert_array_equal(group[f"s{level}"][:], expected, err_msg=f"s{level}")
    assert reads.min() == reads.max() == 1  # every base voxel read exactly once
    assert os.listdir(f"{path}/.bioimage-tasks/staging.zarr")  # deep levels went through staging


@pytest.mark.parametrize("method", ["median", "mode"])
def test_nan_float_pyramid_matches_tensorstore_bit_for_bit(tmp_path, rng, small_regions, method):
    base = nan_floats(rng, (27, 22, 19), "float32")
    path = f"{tmp_path}/pyramid.zarr"
    pyramid_flow(
        base,
        path,
        scale_factors=[2, (1, 2, 3), 2],
        method=method,
        chunks=(4, 4, 4),
        num_workers=2,
        job_config=RunnerConfig(memory_budget=2**20),
    )
    group = zarr.open_group(path, mode="r")
    cumulative = [(1, 1, 1), *cumulative_products([(2, 2, 2), (1, 2, 3), (2, 2, 2)])]
    for level, expected in enumerate(tensorstore_levels(base, cumulative, method)):
        assert_same_bits(group[f"s{level}"][:], expected, f"s{level}")


@pytest.mark.parametrize("dtype,method", [(">u2", "mean"), (">u2", "mode"), (">f4", "median")])
def test_big_endian_zarr_v2_input_and_a_rerun(tmp_path, rng, small_regions, dtype, method):
    """A big-endian zarr v2 input (as other tools write it) gives every level of its native-order
    values; a rerun into the group accepts the levels it made (stored in native byte order)."""
    native_dtype = np.dtype(dtype).newbyteorder("=")
    base = (
        nan_floats(rng, (27, 22, 19), native_dtype)
        if native_dtype.kind == "f"
        else labels_like(rng, (27, 22, 19), native_dtype.name)
    )
    zarr_input(tmp_path, base, (8, 8, 8), dtype=dtype, zarr_format=2)
    path = f"{tmp_path}/pyramid.zarr"
    cumulative = [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    for _ in range(2):
        pyramid_flow(
            f"{tmp_path}/in.zarr/raw",
            path,
            scale_factors=[2, 2],
            method=method,
            chunks=(4, 4, 4),
            num_workers=2,
            job_config=RunnerConfig(memory_budget=2**20),
        )
        group = zarr.open_group(path, mode="r")
        for level, expected in enumerate(tensorstore_levels(base, cumulative, method)):
            assert_same_bits(group[f"s{level}"][:].astype(native_dtype), expected, f"s{level}")


def test_anisotropic_plan_from_voxel_size_and_budget(tmp_path, rng):
    """`levels` planned from the voxel size; a small budget forces several tiles per region."""
    labels = labels_like(rng, (20, 70, 66), "uint32")
    path = f"{tmp_path}/labels.zarr"
    pyramid_flow(
        labels,
        path,
        levels=4,
        method="mode",
        voxel_size=(2.0, 0.5, 0.5),
        chunks=(8, 8, 8),
        job_config=RunnerConfig(memory_budget=2**20),
    )
    group = zarr.open_group(path, mode="r")
    cumulative = [(1, 1, 1), (1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16)]
    for level, expected in enumerate(tensorstore_levels(labels, cumulative, "mode")):
        np.testing.assert_array_equal(group[f"s{level}"][:], expected)


def test_existing_s0_is_used_not_copied(tmp_path, rng):
    image = rng.integers(0, 255, (40, 36, 30), dtype=np.uint8)
    path = f"{tmp_path}/image.zarr"
    s0 = zarr.create_array(
        store=path, name="s0", shape=image.shape, dtype="uint8", chunks=(8, 8, 8)
    )
    s0[:] = image
    chunk = f"{path}/s0/c/0/0/0"
    before = os.stat(chunk).st_mtime_ns
    pyramid_flow(f"{path}/s0", path, scale_factors=[2, 2], method="mean", chunks=(8, 8, 8))
    assert os.stat(chunk).st_mtime_ns == before
    group = zarr.open_group(path, mode="r")
    for level, expected in enumerate(
        tensorstore_levels(image, [(1,) * 3, (2,) * 3, (4,) * 3], "mean")
    ):
        np.testing.assert_array_equal(group[f"s{level}"][:], expected)
    assert [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]] == [
        "s0",
        "s1",
        "s2",
    ]


def test_deepest_window_beyond_the_budget_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="memory budget"):
        pyramid_flow(
            np.zeros((64, 64, 64), np.uint32),
            f"{tmp_path}/x.zarr",
            scale_factors=[2] * 10,
            method="mode",
            job_config=RunnerConfig(memory_budget=2**20),
        )
    assert not os.path.exists(f"{tmp_path}/x.zarr")


def finished_regions(output: str) -> set[int]:
    """Ids of the regions recorded as written."""
    if not os.path.isdir(f"{output}/.bioimage-tasks/blocks"):
        return set()
    return BlockRecords(records_dir(output)).done()


@pytest.mark.slow
def test_killed_pyramid_resumes_only_unfinished_regions(tmp_path, rng, small_regions):
    labels = labels_like(rng, (48, 48, 48), "uint16")
    zarr_input(tmp_path, labels, (16, 16, 16))
    output = f"{tmp_path}/out.zarr"
    job = [
        sys.executable,
        os.path.join(TESTS_DIR, "pyramid_job.py"),
        f"{tmp_path}/in.zarr/raw",
        output,
        "0.3",
    ]
    from prefect.settings import PREFECT_API_URL

    process = subprocess.Popen(
        job, cwd=TESTS_DIR, env=os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    )
    try:
        wait_for(lambda: len(finished_regions(output)) >= 2, timeout=240)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = finished_regions(output)
    assert (
        2 <= len(finished) < 27
    )  # killed mid-run: some of the 27 regions of 16**3 recorded, not all
    first = min(finished)  # its s0 chunk (one region each) must not be written again
    chunk = f"{output}/s0/c/{first // 9}/{first // 3 % 3}/{first % 3}"
    before = os.stat(chunk).st_mtime_ns
    pyramid_flow(
        f"{tmp_path}/in.zarr/raw", output, scale_factors=[2, 2], method="mode", chunks=(16, 16, 16)
    )
    assert os.stat(chunk).st_mtime_ns == before
    assert finished_regions(output) == set(range(27))
    group = zarr.open_group(output, mode="r")
    for level, expected in enumerate(
        tensorstore_levels(labels, [(1,) * 3, (2,) * 3, (4,) * 3], "mode")
    ):
        np.testing.assert_array_equal(group[f"s{level}"][:], expected)


def test_pyramid_never_trusts_records_of_another_computation_or_a_changed_input(
    tmp_path, rng, small_regions
):
    """A, B, A into one group recomputes A; an input rewritten in place is seen on the rerun."""
    image = rng.integers(0, 255, (30, 34, 28), dtype=np.uint8)
    source = zarr.open_array(zarr_input(tmp_path, image, (8, 8, 8)), mode="r+")
    path, options = f"{tmp_path}/out.zarr", {"scale_factors": [2, 2], "chunks": (8, 8, 8)}

    def check(data, method):
        group = zarr.open_group(path, mode="r")
        for level, expected in enumerate(
            tensorstore_levels(data, [(1,) * 3, (2,) * 3, (4,) * 3], method)
        ):
            np.testing.assert_array_equal(
                group[f"s{level}"][:], expected, err_msg=f"{method} s{level}"
            )

    for method in ("mean", "max", "mean"):
        pyramid_flow(f"{tmp_path}/in.zarr/raw", path, method=method, **options)
        check(image, method)
    changed = image.copy()
    changed[:8, :8, :8] = 255 - changed[:8, :8, :8]  # one input chunk rewritten in place
    source[:8, :8, :8] = changed[:8, :8, :8]
    pyramid_flow(f"{tmp_path}/in.zarr/raw", path, method="mean", **options)
    check(changed, "mean")
