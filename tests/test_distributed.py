"""Dask backends on the real Prefect engine: a LocalCluster of worker processes and an existing
scheduler. Same kernel, bit-identical output; a killed worker loses no block."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from distributed import LocalCluster
from helpers import SlowSource, records_dir, wait_for, zarr_input
from reference import assert_matches_skimage, random_array, skimage_downsample

from bioimage_tasks import BlockGrid
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import DaskConfig, LocalClusterConfig
from flows import copy_flow, downsample_flow

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

SHAPE = (61, 67, 45)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A zarr input, and an output-space mask (partial chunks, empty blocks)."""
    root = tmp_path_factory.mktemp("distributed")
    image = random_array(np.random.default_rng(7), SHAPE, "uint16")
    zarr_input(root, image, (16, 16, 16))
    mask = np.zeros((31, 34, 23), bool)
    mask[3:20, 5:30, 2:11] = True
    zarr_input(root, mask, (8, 8, 8), name="mask")
    return root, image, mask


RUNS = {  # name: (job_type, num_workers, job_config)
    "threads-1": ("local", 1, None),
    "threads-4": ("local", 4, None),
    "subprocess-2": ("subprocess", 2, LocalClusterConfig(worker_timeout=120)),
}
CASES = {
    "order1-aa-mask": {"order": 1, "anti_aliasing": True, "mask": "mask"},
    "order0-block-ids": {"order": 0, "block_ids": [0, 3, 7, 11]},
}


@pytest.mark.parametrize("case", CASES)
def test_backends_are_bit_identical(volume, case):
    root, image, mask = volume
    outputs = {}
    for name, (job_type, workers, config) in RUNS.items():
        options = dict(CASES[case])
        if options.get("mask"):
            options["mask"] = f"{root}/in.zarr/mask"
        result = downsample_flow(
            f"{root}/in.zarr/raw",
            2,
            f"{root}/{case}-{name}.zarr/s1",
            block_shape=(8, 8, 8),
            job_type=job_type,
            num_workers=workers,
            job_config=config,
            **options,
        )
        outputs[name] = result[:]
    first = outputs["threads-1"]
    for name, output in outputs.items():
        np.testing.assert_array_equal(output, first, err_msg=f"{name} differs from threads-1")
    if case == "order1-aa-mask":
        reference = np.clip(np.rint(skimage_downsample(image, (2, 2, 2), 1, True)), 0, 65535)
        np.testing.assert_array_equal(first[mask], reference[mask])
        assert np.all(first[~mask] == 0)
    else:
        grid = BlockGrid(first.shape, (8, 8, 8))
        written = np.zeros(first.shape, bool)
        for block_id in CASES[case]["block_ids"]:
            written[grid.block_slices(block_id)] = True
        full = skimage_downsample(image, (2, 2, 2), 0, False).astype(image.dtype)
        np.testing.assert_array_equal(first[written], full[written])
        assert np.all(first[~written] == 0)


def test_killed_worker_loses_no_block(volume):
    """SIGKILL one worker process mid-run: its batches re-run elsewhere, the output is complete."""
    root, image, _ = volume
    output = f"{root}/killed.zarr/copy"
    source = SlowSource(f"{root}/in.zarr/raw", delay=0.15)
    killed = []

    def kill_a_worker():
        directory = wait_for(
            lambda: (
                os.path.isdir(f"{root}/killed.zarr/copy/.bioimage-tasks/blocks")
                and records_dir(f"{root}/killed.zarr/copy")
            ),
            120,
        )
        executors = wait_for(lambda: BlockRecords(directory).executors(), 120)
        pid = int(sorted(executors.values())[0].split(":")[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    result = copy_flow(
        source,
        output,
        block_shape=(16, 16, 16),
        job_type="subprocess",
        num_workers=2,
        job_config=LocalClusterConfig(blocks_per_task=4, worker_timeout=120),
    )
    killer.join(timeout=5)
    assert killed, "no worker was killed: the run finished too fast to test anything"
    np.testing.assert_array_equal(result[:], image)
    executors = BlockRecords(records_dir(f"{root}/killed.zarr/copy")).executors()
    assert len(executors) == BlockGrid(SHAPE, (16, 16, 16)).n_blocks
    assert len(set(executors.values())) >= 2


def test_existing_dask_scheduler(volume):
    root, image, _ = volume
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        result = downsample_flow(
            f"{root}/in.zarr/raw",
            (1, 2, 3),
            f"{root}/dask.zarr/s1",
            order=1,
            anti_aliasing=True,
            job_type="dask",
            num_workers=2,
            job_config=DaskConfig(address=cluster.scheduler_address),
        )
    assert_matches_skimage(result[:], image, (1, 2, 3), 1, True)


def test_distributed_needs_file_backed_data(volume, tmp_path):
    root, image, _ = volume
    with pytest.raises(ValueError, match="needs a file-backed input"):
        downsample_flow(image, 2, f"{tmp_path}/o.zarr/s1", job_type="subprocess")
    with pytest.raises(ValueError, match="needs an output"):
        downsample_flow(f"{root}/in.zarr/raw", 2, job_type="subprocess")
    with pytest.raises(ValueError, match="DaskConfig.address"):
        downsample_flow(f"{root}/in.zarr/raw", 2, f"{tmp_path}/o.zarr/s1", job_type="dask")
    assert not os.path.exists(tmp_path / "o.zarr")
