"""The self-healing automation (deployments/healing.py) against a real `prefect server start`:
a served deployment whose run loses a block to an injected transient read failure is re-run by
the automation with the failed block ids and ends complete and exact; a permanent failure is
retried at most MAX_HEALS times. prefect.yaml declares the same trigger."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
import zarr
from helpers import prefect_server_process, wait_for, zarr_input

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "deployments"))

from healing import MAX_HEALS, heal_trigger  # noqa: E402

SHAPE, BLOCK, FAILING_BLOCK = (
    (32, 32, 32),
    (8, 8, 8),
    5,
)  # output (16, 16, 16): 8 blocks; block 5 starts (8, 0, 8)


def test_prefect_yaml_declares_the_heal_trigger_of_serve_py():
    from prefect.cli.deploy._triggers import (
        _initialize_deployment_triggers,
    )  # what `prefect deploy` calls

    with open(os.path.join(REPO, "deployments", "prefect.yaml")) as stream:
        spec = yaml.safe_load(stream)
    for deployment in spec["deployments"]:
        flow_name = {"downsample_flow": "downsample", "copy_flow": "copy"}[
            deployment["entrypoint"].split(":")[1]
        ]
        (declared,) = _initialize_deployment_triggers(deployment["name"], deployment["triggers"])
        assert declared == heal_trigger(flow_name, deployment["name"]), deployment["name"]


def flow_runs(deployment_name: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


def screenshot(url: str, out: str) -> None:
    """A headless-Chromium screenshot of a UI page (as scripts/ui-screenshot.sh takes them)."""
    import tempfile

    profile = tempfile.mkdtemp(prefix="chromium-")
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--window-size=1600,1700",
            "--virtual-time-budget=15000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)


def test_blocks_failed_in_a_deployment_run_are_healed_by_the_automation(tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    image = np.random.default_rng(8).integers(0, 255, SHAPE, dtype=np.uint8)
    zarr_input(tmp_path, image, BLOCK)
    expected = np.rint(image.reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))).astype(
        np.uint8
    )  # ties to even
    common = {
        "input": f"{tmp_path}/in.zarr/raw",
        "scale_factor": 2,
        "block_shape": list(BLOCK),
        "job_config": {"retries": 0},
        "fail_at": [16, 0, 16],
    }
    # the transient failure fails block 5's first two reads: the pipeline's prefetch (which
    # retries in the block's turn) and that retry, so the run ends with blocks failed
    parameters = {
        "heal-transient": common
        | {"output": f"{tmp_path}/out.zarr/s1", "fail_times": 2, "markers": f"{tmp_path}/m1"},
        "heal-permanent": common
        | {"output": f"{tmp_path}/out.zarr/p1", "fail_times": 99, "markers": f"{tmp_path}/m2"},
    }
    script = (
        "import sys; sys.path[:0] = ['tests', 'deployments']; from prefect import serve; "
        "from healing import heal_trigger; from heal_flows import flaky_downsample; "
        f"serve(*[flaky_downsample.to_deployment(name=n, parameters=p, "
        f"triggers=[heal_trigger('flaky-downsample', n)]) for n, p in {parameters!r}.items()])"
    )
    with prefect_server_process(tmp_path / "server") as server:
        env = os.environ | {"PREFECT_API_URL": server, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        served = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server}):
                wait_for(lambda: deployments_registered(2), 120, 1)
                first = run_deployment("flaky-downsample/heal-transient", timeout=240)
                first_permanent = run_deployment("flaky-downsample/heal-permanent", timeout=240)
                assert first.state.is_failed() and first_permanent.state.is_failed()

                def healed():
                    runs = flow_runs("heal-transient")
                    return len(runs) == 2 and runs[1].state and runs[1].state.is_final() and runs

                _, heal = wait_for(healed, 180, 2)
                assert heal.state.is_completed(), heal.state
                assert (
                    heal.created_by.type == "AUTOMATION"
                    and heal.created_by.display_value == "heal flaky-downsample/heal-transient"
                )
                assert heal.parameters == first.parameters | {
                    "block_ids": [FAILING_BLOCK],
                    "resume_from": None,
                }
                np.testing.assert_array_equal(
                    zarr.open_array(f"{tmp_path}/out.zarr/s1")[:], expected
                )

                # a block that keeps failing: MAX_HEALS heal runs, then the automation stops
                def gave_up():
                    runs = flow_runs("heal-permanent")
                    return (
                        len(runs) == 1 + MAX_HEALS
                        and all(r.state.is_final() for r in runs)
                        and runs
                    )

                runs = wait_for(gave_up, 240, 2)
                assert [r.state.type.value for r in runs] == ["FAILED"] * (1 + MAX_HEALS)
                assert all(r.parameters["block_ids"] == [FAILING_BLOCK] for r in runs[1:])
                time.sleep(
                    15
                )  # long enough for another heal run to have been created and picked up
                assert len(flow_runs("heal-permanent")) == 1 + MAX_HEALS
                folder = os.environ.get(
                    "BIOIMAGE_TASKS_HEAL_SCREENSHOTS"
                )  # e.g. docs/: the sequence in the UI
                if folder and shutil.which("chromium"):
                    ui = server.removesuffix("/api")
                    screenshot(f"{ui}/runs", os.path.abspath(os.path.join(folder, "heal-runs.png")))
                    screenshot(
                        f"{ui}/events", os.path.abspath(os.path.join(folder, "heal-events.png"))
                    )
        finally:
            served.terminate()
            served.wait(timeout=60)


def deployments_registered(count: int) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return len(client.read_deployments()) == count
