"""s0 as a verbatim copy of the input's storage files (bioimage_tasks/io/encoded_chunks.py) when
input and s0 store chunks alike: the files' bytes are the input's, absent files stay absent (and a
stale one is deleted), every level stays exact, and anything stored differently is encoded as usual.

The inputs are written with zstd level 19 but say level 0 (the default) in their metadata: the
level only matters to an encoder, so a copied file keeps its level-19 bytes while a re-encoded one
would not, which tells the two paths apart."""

from __future__ import annotations

import json
import os

import numcodecs
import numpy as np
import pytest
import tensorstore as ts
import zarr
from distributed import LocalCluster
from zarr.codecs import ZstdCodec

from bioimage_tasks.runners import DaskConfig
from flows import pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def level19_input(
    path: str,
    data: np.ndarray,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None = None,
    zarr_format: int = 3,
) -> str:
    """`data` as a zarr array whose files are zstd level 19, labelled as level 0 (zarr's
    default)."""
    compressor = ZstdCodec(level=19) if zarr_format == 3 else numcodecs.Zstd(level=19)
    array = zarr.create_array(
        store=path,
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        compressors=compressor,
        zarr_format=zarr_format,
    )
    array[:] = data
    metadata_path = os.path.join(path, "zarr.json" if zarr_format == 3 else ".zarray")
    with open(metadata_path) as file:
        metadata = json.load(file)
    text = json.dumps(metadata).replace('"level": 19', '"level": 0')
    assert text != json.dumps(metadata)
    with open(metadata_path, "w") as file:
        file.write(text)
    return path


def stored_files(directory: str) -> dict[str, bytes]:
    """Every chunk or shard file under `directory` (metadata and records aside), by relative
    path."""
    files = {}
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name not in ("zarr.json", ".zarray", ".zattrs") and not name.startswith("."):
                path = os.path.join(root, name)
                with open(path, "rb") as file:
                    files[os.path.relpath(path, directory)] = file.read()
    return files


def assert_exact_levels(group_path: str, data: np.ndarray, method: str, levels: int) -> None:
    group = zarr.open_group(group_path, mode="r")
    np.testing.assert_array_equal(group["s0"][:], data)
    for level in range(1, levels + 1):
        expected = ts.downsample(ts.array(data), [2**level] * data.ndim, method).read().result()
        np.testing.assert_array_equal(group[f"s{level}"][:], expected)


@pytest.fixture
def image(rng) -> np.ndarray:
    """Odd shape, and an all-zero corner so that some chunks are absent from the input."""
    data = rng.integers(0, 2**16, (70, 45, 37), dtype=np.uint16)
    data[:32, :16, :16] = 0
    return data


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_s0_is_the_inputs_files_and_levels_stay_exact(tmp_path, image, zarr_format):
    source = level19_input(f"{tmp_path}/in.zarr", image, (16, 16, 16), zarr_format=zarr_format)
    pyramid_flow(
        source,
        f"{tmp_path}/out.zarr",
        scale_factors=[2, 2, 2],
        method="mean",
        chunks=(16, 16, 16),
        num_workers=2,
        ngff_version="0.5" if zarr_format == 3 else "0.4",
    )
    copied = stored_files(f"{tmp_path}/out.zarr/s0")
    assert copied == stored_files(source)
    absent = ("c/0/0/0", "c/1/0/0") if zarr_format == 3 else ("0.0.0", "1.0.0")
    assert not set(absent) & set(copied)  # all fill in the input: absent in both
    assert_exact_levels(f"{tmp_path}/out.zarr", image, "mean", 3)


def test_other_storage_is_encoded_and_exact(tmp_path, image):
    """Other chunks (or another codec) than the input's: s0 is encoded, its files are not the
    input's."""
    source = level19_input(f"{tmp_path}/in.zarr", image, (16, 16, 16))
    pyramid_flow(
        source, f"{tmp_path}/out.zarr", scale_factors=[2, 2], method="mean", chunks=(32, 32, 32)
    )
    pyramid_flow(
        source,
        f"{tmp_path}/gzip.zarr",
        scale_factors=[2, 2],
        method="mean",
        chunks=(16, 16, 16),
        output_options={"codec": "gzip"},
    )
    input_files = stored_files(source)
    for group in ("out.zarr", "gzip.zarr"):
        assert not set(stored_files(f"{tmp_path}/{group}/s0").values()) & set(input_files.values())
        assert_exact_levels(f"{tmp_path}/{group}", image, "mean", 2)


def test_a_file_the_changed_input_lacks_is_deleted_from_s0(tmp_path, image):
    """A rerun after the input lost a chunk (now all fill value) deletes s0's copy of it."""
    source = level19_input(f"{tmp_path}/in.zarr", image, (16, 16, 16))
    output = f"{tmp_path}/out.zarr"
    pyramid_flow(source, output, scale_factors=[2, 2], method="mean", chunks=(16, 16, 16))
    assert os.path.exists(f"{output}/s0/c/2/1/1")
    zarr.open_array(source, mode="r+")[32:48, 16:32, 16:32] = 0  # zarr leaves an all-fill chunk out
    assert not os.path.exists(f"{source}/c/2/1/1")
    changed = zarr.open_array(source, mode="r")[:]
    pyramid_flow(source, output, scale_factors=[2, 2], method="mean", chunks=(16, 16, 16))
    assert not os.path.exists(f"{output}/s0/c/2/1/1")
    assert stored_files(f"{output}/s0") == stored_files(source)
    assert_exact_levels(output, changed, "mean", 2)


def test_sharded_labels_are_copied_shard_by_shard(tmp_path, rng):
    labels = np.kron(
        rng.integers(0, 2**40, (9, 8, 8), dtype=np.uint64), np.ones((4, 4, 4), np.uint64)
    )[:33, :30, :29]
    source = level19_input(f"{tmp_path}/in.zarr", labels, (8, 8, 8), shards=(16, 16, 16))
    pyramid_flow(
        source,
        f"{tmp_path}/out.zarr",
        scale_factors=[2, 2],
        method="mode",
        chunks=(8, 8, 8),
        shards=(16, 16, 16),
    )
    assert stored_files(f"{tmp_path}/out.zarr/s0") == stored_files(source)
    assert_exact_levels(f"{tmp_path}/out.zarr", labels, "mode", 2)


@pytest.mark.slow
def test_copy_on_a_dask_cluster(tmp_path, image):
    """Dask workers (other processes) copy and decode the files themselves."""
    source = level19_input(f"{tmp_path}/in.zarr", image, (16, 16, 16))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        pyramid_flow(
            source,
            f"{tmp_path}/out.zarr",
            scale_factors=[2, 2],
            method="median",
            chunks=(16, 16, 16),
            job_type="dask",
            num_workers=2,
            job_config=DaskConfig(address=cluster.scheduler_address),
        )
    assert stored_files(f"{tmp_path}/out.zarr/s0") == stored_files(source)
    assert_exact_levels(f"{tmp_path}/out.zarr", image, "median", 2)
