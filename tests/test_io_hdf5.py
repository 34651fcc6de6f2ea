"""HDF5 inputs through h5py: 'file.h5/dataset' and nested groups read block-wise exactly as h5py
reads the whole dataset; the source pickles as its path (Dask workers open the file themselves);
bad paths fail before work; HDF5 is refused as an output."""

from __future__ import annotations

import os
import pickle
import time

import h5py
import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import executed_since
from reference import assert_matches_skimage

from bioimage_tasks.io import as_source
from bioimage_tasks.runners import LocalClusterConfig
from flows import copy_flow, downsample_flow, pyramid_flow

SHAPE = (30, 70, 50)


@pytest.fixture
def h5file(tmp_path, rng):
    """raw (chunked, gzip) at the root and seg in a nested group, with ilastik's element_size_um."""
    image = rng.integers(0, 2**16, SHAPE, dtype=np.uint16)
    labels = rng.integers(0, 5, SHAPE, dtype=np.uint32)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=image, chunks=(8, 32, 32), compression="gzip")
        dataset = f.create_dataset("volumes/seg/cells", data=labels, chunks=(10, 35, 25))
        dataset.attrs["element_size_um"] = [1.5, 0.25, 0.25]
    return str(path)


def whole(path: str, dataset: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[dataset][()]


def test_datasets_read_block_wise_and_pickle(h5file):
    source = as_source(f"{h5file}/raw")
    assert source.shape == SHAPE and source.dtype == np.uint16 and source.read_unit == (8, 32, 32)
    key = (slice(3, 29), slice(0, 70, 3), slice(10, 41))
    np.testing.assert_array_equal(source[key], whole(h5file, "raw")[key])
    source[key]  # opened in this process; the pickle still carries only the path
    copy = pickle.loads(pickle.dumps(source))
    assert "array" not in copy.__dict__
    np.testing.assert_array_equal(copy[key], whole(h5file, "raw")[key])
    nested = as_source(f"{h5file}/volumes/seg/cells")
    assert (
        nested.physical.voxel_size == (1.5, 0.25, 0.25)
        and nested.physical.units == ("micrometer",) * 3
    )


def test_bad_hdf5_paths_fail_clearly(h5file, tmp_path):
    with pytest.raises(
        FileNotFoundError, match="'nope' in .* does not exist; its datasets: raw, volumes/seg/cells"
    ):
        as_source(f"{h5file}/nope")
    with pytest.raises(ValueError, match="is a group"):
        as_source(f"{h5file}/volumes")
    with pytest.raises(FileNotFoundError, match="no HDF5 file"):
        as_source(f"{tmp_path}/missing.hdf5/raw")


@pytest.mark.usefixtures("prefect_server")
def test_hdf5_is_refused_as_an_output_before_any_work(h5file, tmp_path):
    for call in (
        lambda: copy_flow(f"{h5file}/raw", f"{tmp_path}/out.h5/raw"),
        lambda: downsample_flow(
            f"{h5file}/raw", 2, f"{tmp_path}/out.hdf5/s1", job_type="subprocess"
        ),
    ):
        with pytest.raises(ValueError, match="HDF5 is read-only here"):
            call()
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.hdf5").exists()


@pytest.mark.usefixtures("prefect_server")
def test_downsample_and_resume_from_hdf5(h5file, tmp_path):
    output = f"{tmp_path}/out.zarr/s1"
    result = downsample_flow(f"{h5file}/raw", 2, output, order=1, anti_aliasing=True, num_workers=2)
    assert_matches_skimage(result[:], whole(h5file, "raw"), (2, 2, 2), 1, True)
    started = time.time()
    downsample_flow(f"{h5file}/raw", 2, output, order=1, anti_aliasing=True, num_workers=2)
    assert executed_since(output, started) == set()
    changed = whole(h5file, "raw") // 2
    time.sleep(0.01)
    with h5py.File(
        f"{h5file}.new", "w"
    ) as f:  # a new file in its place (this process still reads the old one)
        f.create_dataset("raw", data=changed, chunks=(8, 32, 32), compression="gzip")
    os.replace(f"{h5file}.new", h5file)
    result = downsample_flow(f"{h5file}/raw", 2, output, order=1, anti_aliasing=True, num_workers=2)
    assert_matches_skimage(result[:], changed, (2, 2, 2), 1, True)


@pytest.mark.usefixtures("prefect_server")
def test_label_pyramid_from_hdf5_takes_element_size(h5file, tmp_path):
    group = f"{tmp_path}/img.ome.zarr/labels/cells"
    pyramid_flow(
        f"{h5file}/volumes/seg/cells", group, scale_factors=[(1, 2, 2)], method="mode", labels=True
    )
    labels = zarr.open_group(group, mode="r")
    scale = labels.attrs["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][0][
        "scale"
    ]
    assert scale == [1.5, 0.5, 0.5]
    reference = (
        ts.downsample(ts.array(whole(h5file, "volumes/seg/cells")), [1, 2, 2], "mode")
        .read()
        .result()
    )
    np.testing.assert_array_equal(labels["s1"][:], reference)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_hdf5_input_on_a_dask_cluster(h5file, tmp_path):
    """Each worker process unpickles the source (its path) and opens the file itself."""
    result = copy_flow(
        f"{h5file}/volumes/seg/cells",
        f"{tmp_path}/out.zarr/cells",
        block_shape=(10, 35, 25),
        job_type="subprocess",
        num_workers=2,
        job_config=LocalClusterConfig(worker_timeout=120),
    )
    np.testing.assert_array_equal(result[:], whole(h5file, "volumes/seg/cells"))
