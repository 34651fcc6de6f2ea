"""`OutputOptions` on the real Prefect engine and real files, part two: `write_empty_chunks` on
both I/O paths and into an existing output, the options on dask workers and on pyramid levels,
and the options given on the command line."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from helpers import zarr_input
from output_stores import chunk_files, output_path, ts_open, zarr_codec
from reference import random_array
from test_cli import cli

from bioimage_tasks import OutputOptions, as_source
from flows import copy_flow, pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def half_empty(rng) -> np.ndarray:
    image = random_array(rng, (32, 32, 32), "uint8")
    image[:16] = 0  # the first 16 planes: half of the 8^3 chunks and 16^3 shards hold only zeros
    return image


@pytest.mark.parametrize("kind", ["zarr v3", "zarr v2", "n5", "zarr v3 sharded"])
def test_write_empty_chunks_with_tensorstore_io(tmp_path, rng, kind):
    image = half_empty(rng)
    files = {}
    for write_empty in (False, True):
        (tmp_path / str(write_empty)).mkdir()
        path = output_path(tmp_path / str(write_empty), kind.removesuffix(" sharded"))
        options = OutputOptions(
            write_empty_chunks=write_empty, shards=(16, 16, 16) if "sharded" in kind else None
        )
        output = copy_flow(image, path, block_shape=(8, 8, 8), output_options=options)
        assert kind == "n5" or as_source(output).fast_io is not None  # tensorstore does the I/O
        np.testing.assert_array_equal(ts_open(path).read().result(), image)
        files[write_empty] = chunk_files(path)
    units = 2 * 2 * 2 if "sharded" in kind else 4 * 4 * 4  # shard or chunk files over (32, 32, 32)
    assert len(files[True]) == units
    assert len(files[False]) == units // 2  # the all-zero half is not stored
    if "sharded" in kind:  # 8 inner chunks of 8^3 in each shard file
        assert zarr.open_array(path.rsplit("/", 1)[0], path="x", mode="r").chunks == (8, 8, 8)


def test_write_empty_chunks_with_zarr_python_io(tmp_path, rng):
    """An output tensorstore does not open (here: a store zarr-python wraps) is written by
    zarr-python, which honours the same option through its array config."""
    image = half_empty(rng)
    counts = {}
    for write_empty in (False, True):
        folder = tmp_path / f"{write_empty}.zarr"
        store = zarr.storage.WrapperStore(zarr.storage.LocalStore(str(folder)))
        output = zarr.create_array(
            store=store, name="x", shape=image.shape, dtype="uint8", chunks=(8, 8, 8)
        )
        assert as_source(output).fast_io is None  # zarr-python does the I/O
        copy_flow(image, output, output_options=OutputOptions(write_empty_chunks=write_empty))
        np.testing.assert_array_equal(zarr.open_array(str(folder), path="x", mode="r")[...], image)
        counts[write_empty] = len(chunk_files(str(folder / "x")))
    assert counts == {True: 64, False: 32}


@pytest.mark.parametrize("kind", ["zarr v3", "n5"])
def test_write_empty_chunks_reruns_into_the_same_output(tmp_path, rng, kind):
    """A rerun with write_empty_chunks=True after a run without is another computation (it
    writes other files), so it rewrites the blocks, into the existing output; a rerun of the same
    call resumes."""
    image = half_empty(rng)
    path = output_path(tmp_path, kind)
    copy_flow(image, path, block_shape=(8, 8, 8))
    assert len(chunk_files(path)) == 32
    stored = {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)}
    copy_flow(
        image, path, block_shape=(8, 8, 8), output_options=OutputOptions()
    )  # the defaults: resumes
    assert {
        name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)
    } == stored
    copy_flow(
        image, path, block_shape=(8, 8, 8), output_options=OutputOptions(write_empty_chunks=True)
    )
    assert len(chunk_files(path)) == 64


def test_dask_workers_honour_the_options(tmp_path, rng):
    """Worker processes get the sink pickled and open their own tensorstore handle: the zarr
    array's write_empty_chunks config travels with it."""
    from bioimage_tasks.runners import LocalClusterConfig

    image = half_empty(rng)
    zarr_input(tmp_path, image, (8, 8, 8))
    path = f"{tmp_path}/out.zarr/x"
    copy_flow(
        f"{tmp_path}/in.zarr/raw",
        path,
        block_shape=(8, 8, 8),
        job_type="subprocess",
        num_workers=2,
        job_config=LocalClusterConfig(worker_timeout=120),
        output_options=OutputOptions(codec="gzip", shards=(16, 16, 16), write_empty_chunks=True),
    )
    assert len(chunk_files(path)) == 8 and zarr_codec(path) == ("gzip", 6)
    np.testing.assert_array_equal(
        zarr.open_array(f"{tmp_path}/out.zarr", path="x", mode="r")[...], image
    )


def test_pyramid_levels_take_codec_and_write_empty_chunks(tmp_path, rng):
    image = half_empty(rng)
    group = f"{tmp_path}/image.zarr"
    pyramid_flow(
        image,
        group,
        scale_factors=[2],
        chunks=(8, 8, 8),
        output_options=OutputOptions(
            codec="gzip", level=4, shards=(16, 16, 16), write_empty_chunks=True
        ),
    )
    for level, units in ((0, 8), (1, 1)):
        assert zarr_codec(f"{group}/s{level}") == ("gzip", 4)
        assert zarr.open_array(group, path=f"s{level}", mode="r").shards == (16, 16, 16)
        assert len(chunk_files(f"{group}/s{level}")) == units  # all-zero shards of s0 stored too
    np.testing.assert_array_equal(zarr.open_array(group, path="s0", mode="r")[...], image)


def test_command_line_options(tmp_path, rng):
    image = half_empty(rng)
    zarr_input(tmp_path, image, (8, 8, 8))
    out = f"{tmp_path}/out.zarr/x"
    done = cli(
        "copy",
        f"{tmp_path}/in.zarr/raw",
        out,
        "--codec",
        "gzip",
        "--level",
        "3",
        "--shards",
        "16,16,16",
        "--write-empty-chunks",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert zarr_codec(out) == ("gzip", 3) and zarr.open_array(
        f"{tmp_path}/out.zarr", path="x"
    ).shards == (16, 16, 16)
    assert len(chunk_files(out)) == 8  # the all-zero shards too
    np.testing.assert_array_equal(zarr.open_array(f"{tmp_path}/out.zarr", path="x")[...], image)
    refused = cli(
        "downsample", f"{tmp_path}/in.zarr/raw", f"{tmp_path}/out.n5/x", "--shards", "8,8,8"
    )
    assert refused.returncode == 1 and not os.path.exists(tmp_path / "out.n5")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert lines[1:] == [
        "error: ParameterError: output_options.shards need a zarr v3 output; a new n5 output "
        "has no shards"
    ]  # after the line that says which engine runs
    shown = cli("pyramid", "--help").stdout  # downsample and copy took theirs above
    for option in ("--codec", "--level", "--shards", "--write-empty-chunks"):
        assert option in shown
