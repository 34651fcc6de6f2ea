"""Resume, retries and nothing lost, with real processes and the real Prefect engine: a run
killed with SIGKILL resumes paying only for missing blocks; recreated outputs and changed
parameters never reuse old results; transient failures recover through retries."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from helpers import executed_since, record_times, records_dir, slurm_jobs, wait_for, zarr_input
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from reference import random_array, skimage_downsample

from bioimage_tasks import BlockGrid
from bioimage_tasks.engine import Stage, plan_batches
from bioimage_tasks.prefect.edge import PrefectEdge
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import LocalClusterConfig, RunnerConfig
from flows import copy_flow, downsample_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (48, 40, 40)
OUT_SHAPE = (24, 20, 20)
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def volume(tmp_path):
    image = random_array(np.random.default_rng(11), SHAPE, "uint8")
    zarr_input(tmp_path, image, (16, 16, 16))
    return tmp_path, image


def expected_order1(image):
    return np.clip(np.rint(skimage_downsample(image, (2, 2, 2), 1, True)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "job_type, engine",
    [
        ("local", "flow"),
        ("local", "plain"),
        pytest.param("subprocess", "flow", marks=pytest.mark.slow),
        pytest.param("subprocess", "plain", marks=pytest.mark.slow),
        pytest.param("slurm", "flow", marks=pytest.mark.slow),
    ],
)
def test_sigkilled_run_resumes_only_missing_blocks(request, volume, job_type, engine):
    from prefect.settings import PREFECT_API_URL

    if job_type == "slurm":
        request.getfixturevalue("slurm_cluster")
    root, image = volume
    output, array_dir = f"{root}/out.zarr/s1", f"{root}/out.zarr/s1"
    n_blocks = BlockGrid(OUT_SHAPE, (8, 8, 8)).n_blocks
    env = os.environ | {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "RESUME_ENGINE": engine,
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(TESTS_DIR, "resume_job.py"),
            f"{root}/in.zarr/raw",
            output,
            job_type,
            "0.4",
            str(root / "logs"),
        ],
        env=env,
    )
    try:
        wait_for(
            lambda: (
                os.path.isdir(f"{array_dir}/.bioimage-tasks/blocks")
                and len(BlockRecords(records_dir(array_dir)).done()) >= n_blocks // 4
            ),
            240,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    if (
        job_type == "slurm"
    ):  # the killed flow's jobs are cancelled at once, not after a worker timeout
        wait_for(lambda: not slurm_jobs(), timeout=15)
    time.sleep(1.0)  # let writes in flight on orphaned workers land or die
    missing = n_blocks - len(BlockRecords(records_dir(array_dir)).done())
    assert 0 < missing < n_blocks, "the run must be killed part-way"
    started = time.time()
    result = downsample_flow(
        f"{root}/in.zarr/raw", 2, output, order=1, anti_aliasing=True, block_shape=(8, 8, 8)
    )
    executed = executed_since(array_dir, started)
    print(
        f"{job_type}: killed with {missing} of {n_blocks} blocks missing; "
        f"the rerun executed {len(executed)}"
    )
    assert len(executed) <= 1.1 * missing, (
        f"rerun executed {len(executed)} blocks for {missing} missing"
    )
    assert len(BlockRecords(records_dir(array_dir)).done()) == n_blocks
    np.testing.assert_array_equal(result[:], expected_order1(image))
    clean = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        f"{root}/clean.zarr/s1",
        order=1,
        anti_aliasing=True,
        block_shape=(8, 8, 8),
    )
    np.testing.assert_array_equal(result[:], clean[:])


def test_identical_rerun_executes_nothing(volume):
    root, image = volume
    output = f"{root}/out.zarr/s1"
    downsample_flow(
        f"{root}/in.zarr/raw", 2, output, order=1, anti_aliasing=True, block_shape=(8, 8, 8)
    )
    before = record_times(output)
    started = time.time()
    result = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        output,
        order=1,
        anti_aliasing=True,
        block_shape=(8, 8, 8),
        num_workers=3,
    )  # another batching: block records still resume
    assert executed_since(output, started) == set()
    assert record_times(output) == before
    np.testing.assert_array_equal(result[:], expected_order1(image))


def test_prefect_cache_resumes_when_block_records_are_lost(volume):
    """With the block records deleted, every batch comes from Prefect's persisted result cache
    (its storage block is loaded, not saved again, on the rerun) and no block is recomputed."""
    root, image = volume
    output = f"{root}/out.zarr/s1"
    kwargs = {"order": 1, "anti_aliasing": True, "block_shape": (8, 8, 8)}
    downsample_flow(f"{root}/in.zarr/raw", 2, output, **kwargs)
    records = records_dir(output)
    shutil.rmtree(records)
    state = downsample_flow(f"{root}/in.zarr/raw", 2, output, return_state=True, **kwargs)
    with get_client(sync_client=True) as client:
        flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        planned = len(
            plan_batches(
                Stage("downsample", SimpleNamespace(grid=BlockGrid(OUT_SHAPE, (8, 8, 8)))),
                1,
                per_worker=PrefectEdge.tasks_per_worker,
            )
        )
        n_batches = 1 if planned <= PrefectEdge.tasks_per_worker else planned  # one task run

        # task runs and their states reach the API through events, so they may lag
        def final_states():
            runs = client.read_task_runs(flow_run_filter=flow_run_filter)
            if len(runs) == n_batches and all(
                r.state is not None and r.state.is_final() for r in runs
            ):
                return [r.state.name for r in runs]
            return None

        task_states = wait_for(final_states, 30)
    assert set(task_states) == {"Cached"}
    assert not os.path.exists(records)  # nothing executed, so nothing recorded
    np.testing.assert_array_equal(state.result()[:], expected_order1(image))


def test_recreated_output_is_recomputed(volume):
    """The Prefect cache lives outside the output here, so only the output's identity token
    stops it from claiming blocks of the new, empty output."""
    root, image = volume
    config = RunnerConfig(result_storage=str(root / "shared-cache"))
    output = f"{root}/out.zarr/s1"
    downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        output,
        order=1,
        anti_aliasing=True,
        block_shape=(8, 8, 8),
        job_config=config,
    )
    zarr.create_array(
        store=str(root / "out.zarr"),
        name="s1",
        shape=OUT_SHAPE,
        dtype="uint8",
        chunks=(8, 8, 8),
        overwrite=True,
    )
    started = time.time()
    result = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        output,
        order=1,
        anti_aliasing=True,
        block_shape=(8, 8, 8),
        job_config=config,
    )
    assert len(executed_since(output, started)) == BlockGrid(OUT_SHAPE, (8, 8, 8)).n_blocks
    np.testing.assert_array_equal(result[:], expected_order1(image))


@pytest.mark.parametrize(
    "change", [{"order": 0, "anti_aliasing": False}, {"scale_factor": (2, 2, 1)}]
)
def test_changed_parameters_never_hit_the_old_cache(volume, change):
    root, image = volume
    config = RunnerConfig(result_storage=str(root / "shared-cache"))
    base = {
        "input": f"{root}/in.zarr/raw",
        "scale_factor": 2,
        "order": 1,
        "anti_aliasing": True,
        "block_shape": (8, 8, 8),
        "job_config": config,
    }
    downsample_flow(**base, output=f"{root}/a.zarr/s1")
    changed = base | change
    result = downsample_flow(**changed, output=f"{root}/b.zarr/s1")
    factors = changed["scale_factor"] if isinstance(changed["scale_factor"], tuple) else (2, 2, 2)
    reference = skimage_downsample(image, factors, changed["order"], changed["anti_aliasing"])
    np.testing.assert_array_equal(result[:], np.clip(np.rint(reference), 0, 255).astype(np.uint8))
    if "order" in change:  # same output, new order: the old records must not vouch for anything
        again = downsample_flow(**changed, output=f"{root}/a.zarr/s1")
        np.testing.assert_array_equal(again[:], result[:])


class FlakySource:
    """Fails the first read of chosen blocks (a marker file remembers it), then works: a
    transient I/O error."""

    def __init__(self, array: np.ndarray, flaky_starts: set[tuple[int, ...]], marker_dir: str):
        self.array, self.flaky_starts, self.marker_dir = array, flaky_starts, marker_dir
        self.name = "flaky"

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    write_unit = None

    def fingerprint(self) -> dict:
        return {"flaky": self.marker_dir}

    def __getitem__(self, key):
        start = tuple(k.start for k in key)
        marker = os.path.join(self.marker_dir, "-".join(map(str, start)))
        if start in self.flaky_starts and not os.path.exists(marker):
            open(marker, "w").close()
            raise OSError("injected transient read failure")
        return self.array[key]


def test_transient_failures_recover_through_retries(volume):
    root, image = volume
    grid = BlockGrid(SHAPE, (8, 8, 8))
    flaky = FlakySource(
        image, {tuple(s.start for s in grid.block_slices(b)) for b in (2, 9, 30)}, str(root)
    )
    result = copy_flow(
        flaky,
        f"{root}/copy.zarr/raw",
        block_shape=(8, 8, 8),
        num_workers=2,
        job_config=RunnerConfig(retries=2, retry_delay=0.1),
    )
    np.testing.assert_array_equal(result[:], image)
    assert len(os.listdir(root)) >= 3 + 2  # the three markers prove the failures happened


def test_rewriting_blocks_gives_the_same_output(volume):
    root, image = volume
    output = f"{root}/out.zarr/s1"
    first = downsample_flow(
        f"{root}/in.zarr/raw", 2, output, order=1, anti_aliasing=True, block_shape=(8, 8, 8)
    )[:]
    started = time.time()
    all_ids = list(range(BlockGrid(OUT_SHAPE, (8, 8, 8)).n_blocks))
    again = downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        output,
        order=1,
        anti_aliasing=True,
        block_shape=(8, 8, 8),
        block_ids=all_ids,
    )
    assert executed_since(output, started) == set(all_ids)  # block_ids ignore records and cache
    np.testing.assert_array_equal(again[:], first)


@pytest.mark.parametrize(
    "job_type,config",
    [
        ("local", None),
        pytest.param("subprocess", LocalClusterConfig(worker_timeout=120), marks=pytest.mark.slow),
    ],
)
def test_tiny_chunks_lose_no_update(volume, job_type, config):
    """4 workers on 2^3 chunks with a partial mask: every block owns its chunks, nothing is lost."""
    root, image = volume
    output = zarr.create_array(
        store=str(root / "tiny.zarr"), name="s1", shape=OUT_SHAPE, dtype="uint8", chunks=(2, 2, 2)
    )
    output[:] = 5
    mask = np.random.default_rng(0).random(OUT_SHAPE) > 0.3
    zarr_input(root, mask, (4, 4, 4), container="tiny.zarr", name="mask")
    downsample_flow(
        f"{root}/in.zarr/raw",
        2,
        output,
        order=1,
        anti_aliasing=True,
        num_workers=4,
        job_type=job_type,
        job_config=config,
        mask=f"{root}/tiny.zarr/mask",
        block_shape=(2, 4, 2),
    )
    got, expected = output[:], expected_order1(image)
    np.testing.assert_array_equal(got[mask], expected[mask])
    assert np.all(got[~mask] == 5)


class BrokenBlocks(FlakySource):
    """Fails chosen blocks every time until `repair()`: a permanent failure, then a fix."""

    def __getitem__(self, key):
        if tuple(k.start for k in key) in self.flaky_starts:
            raise OSError("injected permanent read failure")
        return self.array[key]

    def repair(self) -> None:
        self.flaky_starts = set()


def test_resume_from_a_failed_flow_run(volume):
    from bioimage_tasks import BlocksFailedError

    root, image = volume
    grid = BlockGrid(SHAPE, (8, 8, 8))
    broken = BrokenBlocks(
        image, {tuple(s.start for s in grid.block_slices(b)) for b in (4, 20)}, str(root / "id")
    )
    output = f"{root}/copy.zarr/raw"
    state = copy_flow(
        broken, output, block_shape=(8, 8, 8), job_config=RunnerConfig(retries=0), return_state=True
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BlocksFailedError) and error.failed_block_ids == [4, 20]
    broken.repair()
    copy_flow(image, f"{root}/other.zarr/raw", block_shape=(8, 8, 8))
    started = time.time()
    with pytest.raises(ValueError, match="wrote to"):
        copy_flow(
            broken,
            f"{root}/other.zarr/raw",
            block_shape=(8, 8, 8),
            resume_from=state.state_details.flow_run_id,
        )
    with pytest.raises(ValueError, match="there is nothing to resume"):
        copy_flow(broken, f"{root}/missing.zarr/raw", resume_from=state.state_details.flow_run_id)
    with pytest.raises(ValueError, match="must be a Prefect flow run id or a block-record folder"):
        copy_flow(broken, output, resume_from="not-a-run")
    result = copy_flow(
        broken, output, block_shape=(8, 8, 8), resume_from=state.state_details.flow_run_id
    )
    assert executed_since(output, started) == {4, 20}
    np.testing.assert_array_equal(result[:], image)
    with pytest.raises(ValueError, match="holds the records of another computation"):
        copy_flow(broken, output, block_shape=(16, 16, 16), resume_from=records_dir(output))
    assert (
        copy_flow(broken, output, block_shape=(8, 8, 8), resume_from=records_dir(output))
        is not None
    )
