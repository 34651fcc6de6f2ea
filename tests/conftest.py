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


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def subprocess_env(prefect_server) -> dict[str, str]:
    """The environment for a flow in a child process (tests/resume_job.py): this session's Prefect
    API, and tests/ importable for the test-only sources."""
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(),
                         "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM (Debian's slurmctld, slurmd, munge), started by the project's own
    script. Skipped where it cannot run (not root, no apt); in CI (CI=true) it must run."""
    import shutil
    import subprocess

    reason = None
    if os.geteuid() != 0:
        reason = "needs root to install and start slurmctld/slurmd/munged"
    elif shutil.which("apt-get") is None and shutil.which("sinfo") is None:
        reason = "no apt-get to install SLURM"
    if reason is None:
        started = subprocess.run(["bash", os.path.join(REPO, "scripts", "slurm-test-cluster.sh"), "start"],
                                 capture_output=True, text=True)
        if started.returncode != 0:
            reason = f"scripts/slurm-test-cluster.sh start failed: {started.stderr[-2000:]}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"SLURM must run in CI: {reason}")
        pytest.skip(reason)
    yield


@pytest.fixture(scope="session")
def postgres_database():
    """The connection URL of an empty database on a real PostgreSQL (Debian's, started by
    scripts/postgres-test-server.sh), for `prefect server start`. Skipped where it cannot run
    (not root, no apt); in CI (CI=true) it must run."""
    import shutil
    import subprocess

    script = os.path.join(REPO, "scripts", "postgres-test-server.sh")
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to install and start PostgreSQL"
    elif shutil.which("apt-get") is None and not any(os.path.isdir(d) for d in ("/usr/lib/postgresql",)):
        reason = "no apt-get to install PostgreSQL"
    if reason is None:
        started = subprocess.run(["bash", script, "start"], capture_output=True, text=True)
        fresh = subprocess.run(["bash", script, "fresh", f"bioimage_tasks_test_{os.getpid()}"], capture_output=True,
                               text=True) if started.returncode == 0 else started
        if fresh.returncode != 0:
            reason = f"scripts/postgres-test-server.sh failed: {(started.stderr + fresh.stderr)[-2000:]}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must run in CI: {reason}")
        pytest.skip(reason)
    yield fresh.stdout.strip().splitlines()[-1]
