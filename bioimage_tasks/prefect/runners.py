"""What the Prefect edge adds to a backend: Dask workers that report to this flow's API."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from prefect.settings import PREFECT_API_URL


@contextlib.contextmanager
def workers_use_this_api(job_type: str) -> Iterator[None]:
    """Export the flow's Prefect API URL (a server's, or the ephemeral one this process started)
    to the environment that local and SLURM workers inherit, for the duration of the run."""
    url = PREFECT_API_URL.value() or _ephemeral_api_url()
    if job_type == "local" or not url or os.environ.get("PREFECT_API_URL") == url:
        yield
        return
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def _ephemeral_api_url() -> str | None:
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None
