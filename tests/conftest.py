"""Shared fixtures: an isolated Prefect API for flow tests, sample arrays, temporary containers."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bioimage-tasks-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# Scripts run in other interpreters (a peer venv): not modules of this suite, not doctested here.
collect_ignore = ["cloudvolume_peer.py"]

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

    return os.environ | {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])),
    }


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
        started = subprocess.run(
            ["bash", os.path.join(REPO, "scripts", "slurm-test-cluster.sh"), "start"],
            capture_output=True,
            text=True,
        )
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
    elif shutil.which("apt-get") is None and not any(
        os.path.isdir(d) for d in ("/usr/lib/postgresql",)
    ):
        reason = "no apt-get to install PostgreSQL"
    if reason is None:
        started = subprocess.run(["bash", script, "start"], capture_output=True, text=True)
        fresh = (
            subprocess.run(
                ["bash", script, "fresh", f"bioimage_tasks_test_{os.getpid()}"],
                capture_output=True,
                text=True,
            )
            if started.returncode == 0
            else started
        )
        if fresh.returncode != 0:
            reason = (
                f"scripts/postgres-test-server.sh failed: {(started.stderr + fresh.stderr)[-2000:]}"
            )
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must run in CI: {reason}")
        pytest.skip(reason)
    yield fresh.stdout.strip().splitlines()[-1]


class S3Server:
    """A real S3-compatible server (moto's, from PyPI) on loopback, with its request log: every
    request it answers is one line of `log`, so tests count the objects a run writes."""

    def __init__(self, endpoint: str, log: str) -> None:
        self.endpoint, self.log = endpoint, log

    def create_bucket(self, name: str) -> str:
        import urllib.request

        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        ).close()
        return name

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request answered so far."""
        with open(self.log) as stream:
            lines = [
                line.split('"')[1].split()
                for line in stream
                if line.count('"') >= 2 and " HTTP/" in line
            ]
        return [(parts[0], parts[1]) for parts in lines if len(parts) == 3]

    def writes_since(self, mark: int) -> list[tuple[str, str]]:
        """The PUT, POST and DELETE requests after the first `mark` requests."""
        return [r for r in self.requests()[mark:] if r[0] in ("PUT", "POST", "DELETE")]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto_server on a free loopback port for the session, and the AWS environment variables our
    flows (and their Dask workers, which inherit the environment) read: endpoint, region and any
    key pair (moto accepts every one)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = str(tmp_path_factory.mktemp("moto") / "requests.log")
    server = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/").close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"moto_server did not start: {open(log).read()[-2000:]}")
            time.sleep(0.2)
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
    )
    try:
        yield S3Server(endpoint, log)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(10)
