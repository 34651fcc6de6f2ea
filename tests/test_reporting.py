"""What the Prefect UI shows: a progress artifact that reaches 100 %, a summary artifact with the
run's facts, and readable flow and task run names, read back through the Prefect API."""

from __future__ import annotations

import numpy as np
import pytest
import tensorstore as ts
from helpers import wait_for
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from bioimage_tasks.plain import progress_listener
from bioimage_tasks.prefect import artifacts as reporting
from flows import downsample_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_progress_and_summary_artifacts(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(
        reporting, "MIN_UPDATE_INTERVAL", 0.0
    )  # publish on every batch, as a long run does
    x = rng.integers(0, 255, (40, 40, 40), dtype=np.uint8)
    seen = []
    token = progress_listener.set(lambda done, total: seen.append((done, total)))
    try:
        state = downsample_flow(
            x,
            2,
            f"{tmp_path}/out.zarr/s1",
            order=1,
            anti_aliasing=True,
            block_shape=(4, 4, 4),
            num_workers=2,
            return_state=True,
        )
    finally:
        progress_listener.reset(token)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    assert seen[0] == (0, 125) and seen[-1] == (125, 125)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        flow_run = client.read_flow_run(run_id)

        def first_batch_run():  # task runs reach the API through events, so they may lag
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            return [run.name for run in runs if run.name.startswith("process-blocks downsample 0-")]

        assert wait_for(first_batch_run, 30)
    by_type = {artifact.type: artifact for artifact in artifacts}
    assert by_type["progress"].data == 100.0
    summary = by_type["markdown"].data
    assert by_type["markdown"].key == "downsample-summary"
    for fact in (
        "| blocks written | 125 |",
        "| blocks failed | 0 |",
        "(40, 40, 40) uint8",
        "order 1, anti-aliasing True",
        "local: 2 threads",
        "125 blocks of (4, 4, 4)",
    ):
        assert fact in summary, f"{fact!r} missing from the summary:\n{summary}"
    assert flow_run.name == "downsample numpy(40, 40, 40) uint8 x2 -> out.zarr/s1"


def test_a_short_run_publishes_only_its_summary(tmp_path, rng):
    """A run shorter than the progress interval gets no progress artifact (it would appear at
    100 %), only its summary."""
    state = downsample_flow(
        rng.integers(0, 255, (16, 16, 16), dtype=np.uint8), 2, return_state=True
    )
    with get_client(sync_client=True) as client:
        artifact_filter = ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
        )
        artifacts = client.read_artifacts(artifact_filter=artifact_filter)
    assert [artifact.type for artifact in artifacts] == ["markdown"]


def task_run_names(client, run_id, count: int) -> list[str]:
    """The names of a flow run's task runs, once `count` of them reached the API (events lag)."""
    flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))

    def names():
        runs = client.read_task_runs(flow_run_filter=flow_run_filter)
        return len(runs) >= count and sorted(run.name for run in runs)

    return wait_for(names, 30)


@pytest.mark.parametrize(
    "block_shape, task_runs",
    [
        ((4, 4, 4), ["process-blocks downsample 0-3, ..., 28-31 (8 batches on threads)"]),
        ((1, 1, 2), 16),
    ],
)
def test_a_small_stage_is_one_task_run(tmp_path, rng, block_shape, task_runs):
    """A small stage's batches (4 per thread) run as one task run on the threads (its batches
    named), a larger stage's as a task run per batch; the output is the same."""
    image = rng.integers(0, 255, (32, 32, 16), dtype=np.uint8)
    output = f"{tmp_path}/out.zarr/s1"
    state = downsample_flow(
        image, 2, output, method="mean", block_shape=block_shape, num_workers=2, return_state=True
    )
    expected = ts.downsample(ts.array(image), [2, 2, 2], "mean").read().result()
    np.testing.assert_array_equal(state.result()[:], expected)
    with get_client(sync_client=True) as client:
        count = len(task_runs) if isinstance(task_runs, list) else task_runs
        names = task_run_names(client, state.state_details.flow_run_id, count)
    if isinstance(task_runs, list):
        assert names == task_runs
    else:
        assert len(names) == task_runs and all(" batches on threads" not in n for n in names)
