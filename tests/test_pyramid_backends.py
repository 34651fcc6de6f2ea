"""The pyramid engine on the distributed backends: an existing Dask scheduler and a real SLURM.
Same engine and kernels as on threads: every level equals tensorstore's downsample of s0."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorstore as ts
import zarr
from distributed import LocalCluster
from helpers import slurm_jobs, wait_for, zarr_input

from bioimage_tasks.runners import DaskConfig, SlurmConfig
from flows import pyramid_flow

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


@pytest.fixture
def labels(tmp_path, rng):
    data = np.kron(rng.integers(0, 6, (10, 9, 9)), np.ones((5, 5, 5), np.int64))[
        :47, :43, :41
    ].astype(np.uint32)
    data[rng.random(data.shape) < 0.05] = 7
    return zarr_input(tmp_path, data, (16, 16, 16)), data


def check_levels(path: str, data: np.ndarray, levels: int) -> None:
    group = zarr.open_group(path, mode="r")
    for level in range(levels + 1):
        expected = ts.downsample(ts.array(data), [2**level] * 3, "mode").read().result()
        np.testing.assert_array_equal(group[f"s{level}"][:], expected)


def test_pyramid_on_an_existing_dask_scheduler(tmp_path, labels):
    path, data = labels
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        pyramid_flow(
            path,
            f"{tmp_path}/dask.zarr",
            scale_factors=[2, 2, 2],
            method="mode",
            chunks=(8, 8, 8),
            job_type="dask",
            num_workers=2,
            job_config=DaskConfig(address=cluster.scheduler_address),
        )
    check_levels(f"{tmp_path}/dask.zarr", data, 3)


@pytest.mark.usefixtures("slurm_cluster")
def test_pyramid_on_slurm(tmp_path, labels):
    path, data = labels
    config = SlurmConfig(
        interface="lo",
        walltime="00:15:00",
        memory="1GB",
        log_directory=str(tmp_path / "logs"),
        worker_timeout=120,
    )
    pyramid_flow(
        path,
        f"{tmp_path}/slurm.zarr",
        scale_factors=[2, 2, 2],
        method="mode",
        chunks=(8, 8, 8),
        job_type="slurm",
        num_workers=2,
        job_config=config,
    )
    check_levels(f"{tmp_path}/slurm.zarr", data, 3)
    wait_for(lambda: not slurm_jobs(), timeout=60)
    assert os.listdir(tmp_path / "logs")  # the regions ran in SLURM jobs
