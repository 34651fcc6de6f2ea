"""A real single-node SLURM: workers are SLURM jobs (seen by the tasks themselves), output is
bit-identical to threads, a cancelled job loses no block, a cluster that cannot start workers
fails in bounded time, and no job outlives its flow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import (
    SlowSource,
    free_port,
    put_s3,
    read_s3,
    records_dir,
    records_location,
    slurm_jobs,
    wait_for,
    zarr_input,
)
from reference import random_array

from bioimage_tasks import BlockGrid
from bioimage_tasks.backends import NoWorkersError
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import SlurmConfig
from flows import copy_flow, downsample_flow, pyramid_flow

pytestmark = [pytest.mark.usefixtures("prefect_server", "slurm_cluster"), pytest.mark.slow]

SHAPE = (48, 50, 44)
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def slurm_config(tmp_path, monkeypatch):
    """Jobs on the loopback interface; tests/ importable by the job's Python (sbatch passes the
    environment), for the test-only sources."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    )
    return SlurmConfig(
        interface="lo",
        walltime="00:15:00",
        memory="1GB",
        log_directory=str(tmp_path / "logs"),
        worker_timeout=120,
    )


@pytest.fixture
def volume(tmp_path):
    image = random_array(np.random.default_rng(3), SHAPE, "uint8")
    zarr_input(tmp_path, image, (16, 16, 16))
    mask = np.zeros((24, 25, 22), bool)
    mask[2:19, 4:20, 1:15] = True
    zarr_input(tmp_path, mask, (8, 8, 8), name="mask")
    return tmp_path, image


def no_jobs_left():
    wait_for(lambda: not slurm_jobs(), timeout=30)


def test_slurm_matches_threads_and_runs_as_jobs(volume, slurm_config):
    root, _ = volume
    options = {
        "order": 1,
        "anti_aliasing": True,
        "mask": f"{root}/in.zarr/mask",
        "block_shape": (8, 8, 8),
    }
    threads = downsample_flow(f"{root}/in.zarr/raw", 2, f"{root}/threads.zarr/s1", **options)
    on_slurm = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        f"{root}/slurm.zarr/s1",
        job_type="slurm",
        num_workers=2,
        job_config=slurm_config,
        **options,
    )
    np.testing.assert_array_equal(on_slurm[:], threads[:])
    executors = BlockRecords(records_dir(f"{root}/slurm.zarr/s1")).executors()
    assert executors and all(e.startswith("slurm-job:") for e in executors.values()), executors
    block_ids = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        f"{root}/ids.zarr/s1",
        job_type="slurm",
        num_workers=1,
        job_config=slurm_config,
        block_ids=[1, 4],
        block_shape=(8, 8, 8),
    )
    grid = BlockGrid(block_ids.shape, (8, 8, 8))
    expected = np.zeros(block_ids.shape, np.uint8)
    full = downsample_flow(f"{root}/in.zarr/raw", 2)
    for block_id in (1, 4):
        expected[grid.block_slices(block_id)] = full[grid.block_slices(block_id)]
    np.testing.assert_array_equal(block_ids[:], expected)
    no_jobs_left()


# The plain API on SLURM in a child process whose PREFECT_API_URL (passed to the jobs by sbatch)
# is a closed port: any contact with Prefect would fail. Prints the Prefect modules it loaded.
PLAIN_ON_SLURM = """
import json, sys
import bioimage_tasks as bt
from bioimage_tasks.runners import SlurmConfig
root = sys.argv[1]
config = SlurmConfig(interface="lo", walltime="00:15:00", memory="1GB", worker_timeout=120,
                     log_directory=f"{root}/plain-logs")
kwargs = dict(job_type="slurm", num_workers=2, job_config=config)
bt.downsample(f"{root}/in.zarr/raw", 2, f"{root}/plain.zarr/s1", method="mean",
              mask=f"{root}/in.zarr/mask", block_shape=(8, 8, 8), **kwargs)
bt.copy(f"{root}/in.zarr/raw", f"{root}/plain.n5/copy", block_shape=(16, 16, 16), **kwargs)
bt.pyramid(f"{root}/in.zarr/raw", f"{root}/plain-pyramid.zarr", levels=2, method="mode",
           chunks=(16, 16, 16), **kwargs)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "prefect_dask"))))
"""


def test_plain_api_on_slurm_equals_the_flows_without_contacting_prefect(volume, slurm_config):
    """bioimage_tasks.downsample, copy and pyramid on SLURM jobs, with no Prefect API reachable,
    write what the flows write on SLURM, and the blocks were written by SLURM jobs."""
    root, image = volume
    closed = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_ON_SLURM, str(root)],
        capture_output=True,
        text=True,
        env=os.environ | {"PREFECT_API_URL": closed},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # no Prefect module loaded
    on_slurm = {"job_type": "slurm", "num_workers": 2, "job_config": slurm_config}
    mean = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        f"{root}/flow.zarr/s1",
        method="mean",
        mask=f"{root}/in.zarr/mask",
        block_shape=(8, 8, 8),
        **on_slurm,
    )
    copied = copy_flow(
        f"{root}/in.zarr/raw", f"{root}/flow.n5/copy", block_shape=(16, 16, 16), **on_slurm
    )
    group = pyramid_flow(
        f"{root}/in.zarr/raw",
        f"{root}/flow-pyramid.zarr",
        levels=2,
        method="mode",
        chunks=(16, 16, 16),
        **on_slurm,
    )
    np.testing.assert_array_equal(zarr.open_array(f"{root}/plain.zarr/s1")[:], mean[:])
    plain_copy = ts.open(
        {"driver": "n5", "kvstore": {"driver": "file", "path": f"{root}/plain.n5/copy"}}
    ).result()
    np.testing.assert_array_equal(plain_copy.read().result(), image)
    np.testing.assert_array_equal(copied[:], image)
    for level in (0, 1, 2):
        plain_level = zarr.open_array(f"{root}/plain-pyramid.zarr/s{level}")[:]
        np.testing.assert_array_equal(plain_level, zarr.open_array(f"{group}/s{level}")[:])
        mode = ts.downsample(ts.array(image), [2**level] * 3, "mode").read().result()
        np.testing.assert_array_equal(plain_level, mode)
    assert (
        zarr.open_group(f"{root}/plain-pyramid.zarr").attrs.asdict()
        == zarr.open_group(group).attrs.asdict()
    )
    for output in (f"{root}/plain.zarr/s1", f"{root}/plain.n5/copy"):
        executors = BlockRecords(records_dir(output)).executors()
        assert executors and all(e.startswith("slurm-job:") for e in executors.values()), executors
    no_jobs_left()


def test_slurm_workers_read_and_write_s3(s3_server, slurm_config):
    """SLURM jobs reach the S3 server (moto on loopback) through the AWS environment sbatch passes:
    a pyramid from and into the bucket, exact, its regions recorded by SLURM jobs in the bucket."""
    bucket = s3_server.create_bucket("slurm-workers")
    image = random_array(np.random.default_rng(5), SHAPE, "uint16")
    put_s3(f"s3://{bucket}/raw.zarr/v3", image)
    group = pyramid_flow(
        f"s3://{bucket}/raw.zarr/v3",
        f"s3://{bucket}/image.ome.zarr",
        scale_factors=[2, 2],
        method="mean",
        chunks=(8, 8, 8),
        job_type="slurm",
        num_workers=2,
        job_config=slurm_config,
    )
    for level in (0, 1, 2):
        expected = ts.downsample(ts.array(image), [2**level] * 3, "mean").read().result()
        np.testing.assert_array_equal(read_s3(f"{group}/s{level}"), expected)
    executors = BlockRecords(records_location(group)).executors()
    assert executors and all(e.startswith("slurm-job:") for e in executors.values()), executors
    no_jobs_left()


def test_cancelled_job_loses_no_block(volume, slurm_config):
    """scancel the job that is working: adaptive scaling brings a new one, the output is
    complete."""
    root, image = volume
    output_dir = f"{root}/cancel.zarr/copy"
    cancelled = []

    def cancel_a_job():
        directory = wait_for(
            lambda: (
                os.path.isdir(f"{output_dir}/.bioimage-tasks/blocks") and records_dir(output_dir)
            ),
            180,
        )
        executors = wait_for(lambda: BlockRecords(directory).executors(), 180)
        job = sorted(executors.values())[0].split(":")[1]
        subprocess.run(["scancel", job], check=True)
        cancelled.append(job)

    canceller = threading.Thread(target=cancel_a_job, daemon=True)
    canceller.start()
    result = copy_flow(
        SlowSource(f"{root}/in.zarr/raw", delay=0.3),
        output_dir,
        block_shape=(16, 16, 16),
        job_type="slurm",
        num_workers=2,
        job_config=slurm_config,
    )
    canceller.join(timeout=5)
    assert cancelled, "no job was cancelled: the run finished too fast to test anything"
    np.testing.assert_array_equal(result[:], image)
    executors = BlockRecords(records_dir(output_dir)).executors()
    assert len(executors) == BlockGrid(SHAPE, (16, 16, 16)).n_blocks
    assert f"slurm-job:{cancelled[0]}" in executors.values()
    assert len(set(executors.values())) >= 2
    no_jobs_left()


def test_jobs_that_never_start_fail_in_bounded_time(volume, slurm_config, tmp_path):
    """Jobs held in the queue (--begin in an hour): the run fails with a clear error after
    worker_timeout, and the pending jobs are cancelled."""
    root, _ = volume
    held = SlurmConfig(
        **{
            **slurm_config.__dict__,
            "extra_directives": ("--begin=now+1hour",),
            "worker_timeout": 15,
        }
    )
    started = time.monotonic()
    with pytest.raises(NoWorkersError, match="no Dask worker for 15 s"):
        downsample_flow(
            f"{root}/in.zarr/raw",
            2,
            f"{root}/held.zarr/s1",
            job_type="slurm",
            num_workers=1,
            job_config=held,
        )
    assert time.monotonic() - started < 90
    no_jobs_left()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_flow_leaves_no_jobs(volume, signum):
    """A flow process stopped by SIGTERM or Ctrl-C cancels its SLURM jobs on the way out."""
    from prefect.settings import PREFECT_API_URL

    root, _ = volume
    env = os.environ | {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(TESTS_DIR, "resume_job.py"),
            f"{root}/in.zarr/raw",
            f"{root}/out.zarr/s1",
            "slurm",
            "0.5",
            str(root / "logs"),
        ],
        env=env,
    )
    try:
        wait_for(
            lambda: (
                os.path.isdir(f"{root}/out.zarr/s1/.bioimage-tasks/blocks")
                and BlockRecords(records_dir(f"{root}/out.zarr/s1")).done()
            ),
            180,
        )
        assert slurm_jobs(), "the run should have SLURM jobs while it works"
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        process.kill()
    n_blocks = BlockGrid((24, 25, 22), (8, 8, 8)).n_blocks
    assert len(BlockRecords(records_dir(f"{root}/out.zarr/s1")).done()) < n_blocks, (
        "the run was not interrupted"
    )
    no_jobs_left()
