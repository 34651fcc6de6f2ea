"""The project's deployments, served from one long-running process (no work pool needed):

    prefect server start --host 127.0.0.1            # in one shell (UI at http://127.0.0.1:4200)
    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Each deployment has example parameters (the demo's sample data under $BIOIMAGE_TASKS_DATA, default
./data) and an example cron schedule; change them here or per run in the UI / with
`prefect deployment run 'downsample/nightly-downsample' --param order=0`. Each also heals itself:
a run that ends with blocks failed is re-run on those blocks by an automation (healing.py)."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefect import serve  # noqa: E402

from flows import copy_flow, downsample_flow  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from healing import heal_trigger  # noqa: E402


def build_deployments(
    data: str, downsample_schedule: dict[str, Any], copy_schedule: dict[str, Any]
) -> list:
    """Deployments of every flow; the schedules are `to_deployment` keywords (cron=...,
    interval=...)."""
    sample = os.path.abspath(os.path.join(data, "sample.zarr"))
    return [
        downsample_flow.to_deployment(
            name="nightly-downsample",
            description="Downsample the sample volume x2 (order 1, anti-aliased) on a local Dask "
            "cluster.",
            parameters={
                "input": f"{sample}/raw",
                "scale_factor": 2,
                "output": f"{sample}/s1",
                "order": 1,
                "anti_aliasing": True,
                "job_type": "subprocess",
                "num_workers": 2,
            },
            tags=["bioimage-tasks"],
            triggers=[heal_trigger("downsample", "nightly-downsample")],
            **downsample_schedule,
        ),
        copy_flow.to_deployment(
            name="nightly-n5-export",
            description="Export the downsampled level to n5 for tools that read n5.",
            parameters={
                "input": f"{sample}/s1",
                "output": os.path.abspath(os.path.join(data, "sample.n5/s1")),
            },
            tags=["bioimage-tasks"],
            triggers=[heal_trigger("copy", "nightly-n5-export")],
            **copy_schedule,
        ),
    ]


if __name__ == "__main__":
    serve(
        *build_deployments(
            os.environ.get("BIOIMAGE_TASKS_DATA", "data"),
            {"cron": "0 2 * * *"},
            {"cron": "30 2 * * *"},
        )
    )
