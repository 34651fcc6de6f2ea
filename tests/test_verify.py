"""Output integrity: a rerun never trusts a damaged output file, and `verify` finds every damaged
chunk by its key and repairs it. Real flows on real stores (zarr v3 sharded or not, zarr v2, n5,
OME-Zarr pyramids, moto's S3 on loopback); the damage is done with plain file operations, the
references are tensorstore's downsample and the input itself."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import executed_since, records_dir, zarr_input

from bioimage_tasks import pyramid_plan
from bioimage_tasks.engine import Stage, plan_batches
from bioimage_tasks.errors import ParameterError, StorageError
from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.io import UrlPath
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import RunnerConfig
from bioimage_tasks.verify import verify
from flows import copy_flow, downsample_flow, pyramid_flow, verify_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (64, 48, 32)
BLOCKS = {"block_shape": (8, 8, 8)}
SHARDED = {"block_shape": (16, 16, 16), "output_options": {"shards": (16, 16, 16)}}
FORMATS = {  # output under tmp_path, flow options, file key of a grid cell, tensorstore driver
    "v3": ("out.zarr/s1", BLOCKS, lambda c: "c/" + "/".join(map(str, c)), "zarr3"),
    "v3-sharded": ("out.zarr/s1", SHARDED, lambda c: "c/" + "/".join(map(str, c)), "zarr3"),
    "v2": ("out2.zarr/s1", BLOCKS, lambda c: ".".join(map(str, c)), "zarr"),
    "n5": ("out.n5/s1", BLOCKS, lambda c: "/".join(map(str, c)), "n5"),
}


@pytest.fixture
def image(tmp_path, rng):
    x = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    return zarr_input(tmp_path, x, (16, 16, 16)), x


def mean(x: np.ndarray, factor: int) -> np.ndarray:
    return ts.downsample(ts.array(x), [factor] * x.ndim, "mean").read().result()


def read(path: str, driver: str, box=...) -> np.ndarray:
    """The array in the folder `path`, read by tensorstore alone."""
    array = ts.open({"driver": driver, "kvstore": {"driver": "file", "path": path + "/"}}).result()
    return array[box].read().result()


def decodes(path: str, driver: str, box) -> bool:
    try:
        read(path, driver, box)
    except ValueError:
        return False
    return True


def delete(path: str) -> None:
    os.remove(path)


def truncate(path: str) -> None:
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


def flip(path: str) -> None:
    """Change bytes in place, keeping the file's size and mtime."""
    status = os.stat(path)
    with open(path, "rb") as stream:
        data = bytearray(stream.read())
    for offset in (len(data) // 2, len(data) * 3 // 4):
        data[offset] ^= 0x5A
    with open(path, "r+b") as stream:
        stream.write(data)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def blocks_covering(shape, block, unit, cell) -> set[int]:
    """Ids (C order) of the blocks of `block` over `shape` that touch the file at grid cell `cell`
    of `unit`-sized files."""
    grid = [-(-n // b) for n, b in zip(shape, block)]
    ranges = [
        range(c * u // b, -(-min((c + 1) * u, n) // b))
        for c, u, b, n in zip(cell, unit, block, shape)
    ]
    return {int(np.ravel_multi_index(position, grid)) for position in itertools.product(*ranges)}


@pytest.mark.parametrize("operation", ["downsample", "copy"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_damaged_files_are_recomputed_verified_and_repaired(tmp_path, image, fmt, operation):
    path, x = image
    relative, options, key_of, driver = FORMATS[fmt]
    if fmt == "v2":
        zarr.open_group(str(tmp_path / "out2.zarr"), mode="w", zarr_format=2)
    output = f"{tmp_path}/{relative}"

    def run() -> None:
        if operation == "downsample":
            downsample_flow(path, 2, output, method="mean", **options)
        else:
            copy_flow(path, output, **options)

    expected = mean(x, 2) if operation == "downsample" else x
    run()
    unit = (16, 16, 16) if fmt == "v3-sharded" else (8, 8, 8)
    cells = {"deleted": (0, 1, 0), "truncated": (1, 1, 0), "flipped": (1, 0, 0)}
    files = {name: f"{output}/{key_of(cell)}" for name, cell in cells.items()}
    delete(files["deleted"]), truncate(files["truncated"]), flip(files["flipped"])
    box = tuple(slice(c * u, (c + 1) * u) for c, u in zip(cells["flipped"], unit))
    flipped_kind = "changed" if decodes(output, driver, box) else "unreadable"
    found = {(b.key, b.kind) for b in verify(output).bad}
    assert found == {
        (key_of(cells["deleted"]), "missing"),
        (key_of(cells["truncated"]), "unreadable"),
        (key_of(cells["flipped"]), flipped_kind),
    }
    started = time.time()
    run()  # sees the deleted and the truncated file (size, mtime), not bytes changed in place
    covering = {
        name: blocks_covering(expected.shape, options["block_shape"], unit, cell)
        for name, cell in cells.items()
    }
    assert executed_since(output, started) == covering["deleted"] | covering["truncated"]
    left = [(b.key, b.kind) for b in verify(output).bad]
    assert left == [(key_of(cells["flipped"]), flipped_kind)]
    started = time.time()
    repaired = verify(output, repair=True)
    assert repaired.ok and [b.key for b in repaired.repaired] == [key_of(cells["flipped"])]
    assert executed_since(output, started) == covering["flipped"]
    np.testing.assert_array_equal(read(output, driver), expected)


def test_bytes_changed_in_place_that_still_decode_are_found_by_checksum(tmp_path, image):
    """Noise compresses to zstd's raw blocks: flipped bytes decode, as other values; only the
    checksum tells. The rerun does not see them (size and mtime kept); verify does."""
    path, x = image
    output = f"{tmp_path}/out.zarr/s1"
    copy_flow(path, output, block_shape=(8, 8, 8))
    flip(f"{output}/c/3/2/1")
    assert decodes(output, "zarr3", (slice(24, 32), slice(16, 24), slice(8, 16)))
    assert not np.array_equal(read(output, "zarr3"), x)
    assert [(b.key, b.kind) for b in verify(output).bad] == [("c/3/2/1", "changed")]
    assert verify(output, repair=True).ok
    np.testing.assert_array_equal(read(output, "zarr3"), x)


def test_partly_written_unreadable_shard_is_rewritten(tmp_path, image):
    """Blocks smaller than a shard rewrite it piece by piece, each piece reading the rest: the
    rerun deletes the shard that no longer decodes first, so its blocks write it anew."""
    path, x = image
    output = f"{tmp_path}/out.zarr/s1"
    options = {"block_shape": (8, 8, 8), "output_options": {"shards": (16, 16, 16)}}
    copy_flow(path, output, **options)
    truncate(f"{output}/c/1/0/1")
    assert [(b.key, b.kind) for b in verify(output).bad] == [("c/1/0/1", "unreadable")]
    started = time.time()
    copy_flow(path, output, **options)
    shard_blocks = blocks_covering(SHAPE, (8, 8, 8), (16, 16, 16), (1, 0, 1))
    assert executed_since(output, started) == shard_blocks
    assert verify(output).ok
    np.testing.assert_array_equal(read(output, "zarr3"), x)


def test_damage_is_seen_when_block_records_are_lost(tmp_path, image):
    """Prefect's cached batches stand in for lost block records, but not for damaged files: a
    stage of many batches (a task run each) redoes only the damaged block's batch."""
    path, x = image
    output = f"{tmp_path}/out.zarr/s1"
    options = {"block_shape": (8, 8, 8), "job_config": RunnerConfig(blocks_per_task=8)}
    copy_flow(path, output, **options)
    shutil.rmtree(records_dir(output))
    delete(f"{output}/c/2/0/3")
    copy_flow(path, output, **options)
    (damaged,) = blocks_covering(SHAPE, (8, 8, 8), (8, 8, 8), (2, 0, 3))
    grid = SimpleNamespace(grid=BlockGrid(SHAPE, (8, 8, 8)))
    batches = plan_batches(Stage("copy", grid), 2, blocks_per_task=8)
    assert len(batches) > 4 * 2  # not a small stage: no merged task run
    batch = next(range(b.start, b.stop) for b in batches if b.start <= damaged < b.stop)
    assert BlockRecords(records_dir(output)).done() == set(batch)  # the others came from the cache
    np.testing.assert_array_equal(read(output, "zarr3"), x)


def test_damage_redoes_a_small_stage_whose_block_records_are_lost(tmp_path, image):
    """A small stage's batches share one task run and one cache entry: with its block records lost
    and one file damaged, the whole stage is redone, and the output is whole again."""
    path, x = image
    output = f"{tmp_path}/out.zarr/s1"
    copy_flow(path, output, block_shape=(8, 8, 8))
    shutil.rmtree(records_dir(output))
    delete(f"{output}/c/2/0/3")
    copy_flow(path, output, block_shape=(8, 8, 8))
    every_block = set(range(BlockGrid(SHAPE, (8, 8, 8)).n_blocks))
    assert BlockRecords(records_dir(output)).done() == every_block
    np.testing.assert_array_equal(read(output, "zarr3"), x)
    assert verify(output).ok


def test_masked_blocks_vouch_for_files_they_leave_alone(tmp_path, image):
    path, x = image
    mask = np.zeros(SHAPE, np.uint8)
    mask[:20, :10, :] = 1
    output = f"{tmp_path}/out.zarr/s1"
    copy_flow(path, output, block_shape=(8, 8, 8), mask=mask)
    started = time.time()
    result = copy_flow(path, output, block_shape=(8, 8, 8), mask=mask)
    assert executed_since(output, started) == set()
    np.testing.assert_array_equal(result[...], np.where(mask, x, 0))


@pytest.fixture
def small_regions(monkeypatch):
    """Many small pyramid regions, so that deep levels are staged (see test_pyramid_engine.py)."""
    monkeypatch.setattr(pyramid_plan, "REGION_VOXELS", 4096)
    monkeypatch.setattr(pyramid_plan, "MIN_REGION_VOXELS", 1024)
    monkeypatch.setattr(pyramid_plan, "TILE_VOXELS", 600)


def executed_in_group(group: str, started: float) -> int:
    """Blocks run since `started`, by the records of the regions and of every staged level."""
    levels = [f"{group}/{name}" for name in os.listdir(group) if re.fullmatch(r"s\d+", name)]
    return sum(
        len(executed_since(folder, started))
        for folder in [group, *levels]
        if os.path.isdir(f"{folder}/.bioimage-tasks/blocks")
    )


@pytest.mark.parametrize("ngff_version", ["0.5", "0.4"])
def test_pyramid_level_damage_is_found_and_repaired(tmp_path, image, small_regions, ngff_version):
    path, x = image
    group = f"{tmp_path}/image.ome.zarr"

    def run() -> None:
        pyramid_flow(
            path,
            group,
            scale_factors=[2, 2],
            method="mean",
            chunks=(8, 8, 8),
            ngff_version=ngff_version,
        )

    run()
    key = "c/1/1/0" if ngff_version == "0.5" else "1.1.0"
    delete(f"{group}/s2/{key}")
    report = verify(group)
    assert [(b.where, b.kind) for b in report.bad] == [(f"s2/{key}", "missing")]
    assert report.arrays[:3] == ["s0", "s1", "s2"]
    assert report.files >= 8 * 6 * 4 + 4 * 3 * 2 + 2 * 2 - 1  # s0, s1, s2 but the deleted one
    started = time.time()
    run()
    assert executed_in_group(group, started) == 1  # the one block of s2 that wrote the file
    flip(f"{group}/s1/{key}")
    truncate(f"{group}/s0/{key}")
    assert {b.where for b in verify(group).bad} == {f"s1/{key}", f"s0/{key}"}
    assert verify(group, repair=True).ok
    driver = "zarr3" if ngff_version == "0.5" else "zarr"
    for level in range(3):
        np.testing.assert_array_equal(read(f"{group}/s{level}", driver), mean(x, 2**level))


def test_s0_copied_file_by_file_is_stamped(tmp_path, image):
    """s0 copied as the input's files (io/encoded_chunks.py) is stamped like any write."""
    path, x = image
    group = f"{tmp_path}/image.ome.zarr"
    pyramid_flow(path, group, scale_factors=[2], method="mean", chunks=(16, 16, 16))
    files = [f"{tmp_path}/in.zarr/raw/c/1/2/1", f"{group}/s0/c/1/2/1"]
    with open(files[0], "rb") as source, open(files[1], "rb") as copy:
        assert source.read() == copy.read()  # the input's bytes: copied, not encoded again
    assert verify(group).ok  # every file stamped, none unrecorded
    truncate(f"{group}/s0/c/1/2/1")
    assert [(b.where, b.kind) for b in verify(group).bad] == [("s0/c/1/2/1", "unreadable")]
    pyramid_flow(path, group, scale_factors=[2], method="mean", chunks=(16, 16, 16))
    assert verify(group).ok
    np.testing.assert_array_equal(read(f"{group}/s0", "zarr3"), x)


def test_staging_damage_is_found_by_its_key(tmp_path, image, small_regions):
    path, x = image
    group = f"{tmp_path}/image.ome.zarr"
    pyramid_flow(path, group, scale_factors=[2, 2], method="mean", chunks=(8, 8, 8))
    staging = f"{group}/.bioimage-tasks/staging.zarr/s2"
    delete(f"{staging}/c/0/0/1")
    assert [b.where for b in verify(group).bad] == [".bioimage-tasks/staging.zarr/s2/c/0/0/1"]
    assert verify(group, repair=True).ok
    np.testing.assert_array_equal(read(f"{group}/s2", "zarr3"), mean(x, 4))


def cli(*args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "bioimage_tasks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_cli_verify_and_repair(tmp_path, image):
    path, x = image
    output = f"{tmp_path}/out.zarr/s1"
    downsample_flow(path, 2, output, method="mean", block_shape=(8, 8, 8))
    delete(f"{output}/c/0/0/1"), truncate(f"{output}/c/1/1/1"), flip(f"{output}/c/2/2/1")
    decoded = decodes(output, "zarr3", (slice(16, 24), slice(16, 24), slice(8, 16)))
    flipped = "changed" if decoded else "unreadable"
    found = cli("verify", output)
    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "missing: c/0/0/1",
        "unreadable: c/1/1/1",
        f"{flipped}: c/2/2/1",
    ]
    assert len(lines) == 4 and "1 missing" in lines[3]
    repaired = cli("verify", output, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert sum(line.startswith("repaired ") for line in repaired.stdout.splitlines()) == 3
    assert "all intact; 3 repaired" in repaired.stdout.splitlines()[-1]
    np.testing.assert_array_equal(read(output, "zarr3"), mean(x, 2))


def test_repair_is_refused_without_a_stored_call(tmp_path, image):
    _, x = image
    zarr_input(tmp_path, x, (16, 16, 16), container="other.zarr")
    report = verify(f"{tmp_path}/other.zarr/raw")  # written by zarr-python: no file has an entry
    assert len(report.bad) == 4 * 3 * 2 and {b.kind for b in report.bad} == {"unrecorded"}
    with pytest.raises(ParameterError, match="run.json"):
        verify(f"{tmp_path}/other.zarr/raw", repair=True)
    output = f"{tmp_path}/out.zarr/s1"
    downsample_flow(x, 2, output, method="mean", block_shape=(8, 8, 8))  # input in memory
    delete(f"{output}/c/0/0/0")
    with pytest.raises(ParameterError, match="input was given as a ndarray in memory"):
        verify(output, repair=True)
    assert [b.key for b in verify(output).bad] == ["c/0/0/0"]  # nothing changed by the refusal


def test_cli_refuses_a_path_that_is_no_output(tmp_path):
    failed = cli("verify", f"{tmp_path}/none.zarr/raw")
    assert failed.returncode == 1
    assert "error: ParameterError: path: no zarr or n5 array" in failed.stderr


def test_verify_flow_fails_on_damage_and_repairs(tmp_path, image):
    path, x = image
    output = f"{tmp_path}/out.zarr/s1"
    copy_flow(path, output, block_shape=(8, 8, 8))
    truncate(f"{output}/c/0/3/2")
    with pytest.raises(StorageError, match="1 bad chunks in .*: c/0/3/2"):
        verify_flow(output)
    report = verify_flow(output, repair=True)
    assert report.ok and [b.where for b in report.repaired] == ["c/0/3/2"]
    np.testing.assert_array_equal(read(output, "zarr3"), x)


# Object storage (moto_server on loopback, tests/conftest.py)


def test_s3_damage_rerun_verify_and_repair(s3_server, image):
    bucket = s3_server.create_bucket("verify-damage")
    path, x = image
    output = f"s3://{bucket}/out.zarr/s1"
    downsample_flow(path, 2, output, method="mean", block_shape=(8, 8, 8))
    location = UrlPath.parse(output, "test").location()
    location.delete("c/0/0/1")
    location.write("c/1/1/1", location.read("c/1/1/1")[:10])
    data = bytearray(location.read("c/2/1/0"))
    data[len(data) // 2] ^= 0x5A
    location.write("c/2/1/0", bytes(data))  # same size: a new ETag all the same
    assert {b.key for b in verify(output).bad} == {"c/0/0/1", "c/1/1/1", "c/2/1/0"}
    mark = len(s3_server.requests())
    downsample_flow(path, 2, output, method="mean", block_shape=(8, 8, 8))
    rewritten = sorted(p for m, p in s3_server.writes_since(mark) if m == "PUT" and "/s1/c/" in p)
    assert rewritten == [f"/{bucket}/out.zarr/s1/c/{k}" for k in ("0/0/1", "1/1/1", "2/1/0")]
    assert verify(output).ok
    location.write("c/0/1/1", b"junk")
    assert [(b.key, b.kind) for b in verify(output).bad] == [("c/0/1/1", "unreadable")]
    assert verify(output, repair=True).ok
    got = ts.open({"driver": "zarr3", "kvstore": location.spec}).result().read().result()
    np.testing.assert_array_equal(got, mean(x, 2))


def test_s3_pyramid_and_copy_verified(s3_server, tmp_path, image, small_regions):
    bucket = s3_server.create_bucket("verify-pyramid")
    _, x = image
    x = x[:32, :32, :16]  # few regions, few objects
    path = zarr_input(tmp_path, x, (16, 16, 16), container="small.zarr")
    group = f"s3://{bucket}/image.ome.zarr"
    pyramid_flow(path, group, scale_factors=[2, 2], method="mean", chunks=(8, 8, 8))
    UrlPath.parse(f"{group}/s2", "test").location().delete("c/0/0/0")
    assert [(b.where, b.kind) for b in verify(group).bad] == [("s2/c/0/0/0", "missing")]
    mark = len(s3_server.requests())
    assert verify(group, repair=True).ok
    puts = [p for m, p in s3_server.writes_since(mark) if m == "PUT" and "/c/" in p]
    rewritten = {p.split("/")[3] for p in puts}
    assert rewritten == {"s2"}  # s2 is staged here: its copy, not the regions, ran again
    copied = f"s3://{bucket}/copy.n5/raw"
    copy_flow(path, copied, block_shape=(16, 16, 16))
    UrlPath.parse(copied, "test").location().delete("1/1/0")
    assert [b.key for b in verify(copied).bad] == ["1/1/0"]
    assert verify(copied, repair=True).ok
    for url, driver, expected in ((f"{group}/s2", "zarr3", mean(x, 4)), (copied, "n5", x)):
        spec = {"driver": driver, "kvstore": UrlPath.parse(url, "test").location().spec}
        np.testing.assert_array_equal(ts.open(spec).result().read().result(), expected)
