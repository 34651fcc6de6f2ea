"""Shared fixtures: an isolated Prefect API for flow tests, sample arrays, temporary containers."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bioimage-tasks-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (its own database) for the whole session: flows in tests run
    the real Prefect engine against a real API."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
