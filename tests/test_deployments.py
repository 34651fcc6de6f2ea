"""Deployments against a real `prefect server start` on 127.0.0.1: serve them, trigger one with
run_deployment and let the other fire from its schedule, then check the data and what the API
shows (flow runs, states, artifacts)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import prefect_server_process, served_deployments, wait_for, zarr_input
from reference import skimage_downsample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Prefect server with its own database; its scheduler looks for due runs every 5 s."""
    with prefect_server_process(
        str(tmp_path_factory.mktemp("prefect-server")),
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"},
    ) as url:
        yield url


def test_served_deployments_run_on_demand_and_on_schedule(server, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    image = np.random.default_rng(5).integers(0, 255, (40, 36, 32), dtype=np.uint8)
    zarr_input(tmp_path, image, (16, 16, 16), container="sample.zarr")
    with served_deployments(
        server, tmp_path, "{'cron': '0 2 * * *'}", "{'interval': 15, 'paused': True}"
    ):
        with temporary_settings(updates={PREFECT_API_URL: server}):
            run = run_deployment("downsample/nightly-downsample", timeout=240)
            assert run.state.is_completed(), run.state
            expected = np.clip(np.rint(skimage_downsample(image, (2, 2, 2), 1, True)), 0, 255)
            np.testing.assert_array_equal(
                zarr.open_array(str(tmp_path / "sample.zarr"), path="s1")[:], expected
            )
            # the copy reads s1: its schedule starts once s1 is written (a copy of a half-written
            # s1 would be recorded as done and never redone)
            with get_client(sync_client=True) as client:
                client.resume_deployment(
                    client.read_deployment_by_name("copy/nightly-n5-export").id
                )

            with get_client(sync_client=True) as client:
                finished = client.read_flow_run(run.id).end_time

            def scheduled_copy_completed():
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs(
                        deployment_filter=DeploymentFilter(
                            name=DeploymentFilterName(any_=["nightly-n5-export"])
                        ),
                        flow_run_filter=FlowRunFilter(
                            state=FlowRunFilterState(
                                type=FlowRunFilterStateType(any_=[StateType.COMPLETED])
                            )
                        ),
                    )
                # a copy that started while s1 was being written copied what was there; the first
                # one after sees s1's rewritten chunks (their signatures) and recopies them
                return [r for r in runs if r.start_time and r.start_time > finished]

            copies = wait_for(scheduled_copy_completed, 180, interval=2)
            assert copies[0].auto_scheduled
            import tensorstore as ts

            n5 = (
                ts.open(
                    {
                        "driver": "n5",
                        "kvstore": {"driver": "file", "path": str(tmp_path / "sample.n5")},
                        "path": "s1",
                    }
                )
                .result()
                .read()
                .result()
            )
            np.testing.assert_array_equal(n5, expected)
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])
                    )
                )
            # the summary; a progress artifact only appears in runs that last over 2 s
            assert "downsample-summary" in {a.key for a in artifacts if a.type == "markdown"}
            assert run.name.startswith("downsample sample.zarr/raw x2")
