"""Test-only sources and process helpers, importable by Dask workers (local and SLURM)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.sources import as_source


@dataclass(frozen=True)
class SlowSource:
    """A file-backed source that sleeps on every read, so a run lasts long enough to kill
    workers in the middle of it."""

    path: str
    delay: float

    def _inner(self):
        return as_source(self.path)

    shape = property(lambda self: self._inner().shape)
    dtype = property(lambda self: self._inner().dtype)
    write_unit = property(lambda self: self._inner().write_unit)

    def fingerprint(self) -> dict:
        return self._inner().fingerprint()  # the same data, read slowly

    def __getitem__(self, key) -> np.ndarray:
        time.sleep(self.delay)
        return self._inner()[key]


def wait_for(condition, timeout: float, interval: float = 0.2):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def slurm_jobs(name_prefix: str = "bioimage-tasks") -> list[str]:
    """Ids of this project's SLURM jobs still known to squeue (pending, running or completing)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(name_prefix)]


def records_dir(array_dir: str) -> str:
    """The single run-key folder of block records under an output array's folder."""
    base = os.path.join(array_dir, ".bioimage-tasks", "blocks")
    (key,) = os.listdir(base)
    return os.path.join(base, key)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server_process(home: str, database_url: str | None = None, log_path: str | None = None,
                           extra_env: dict[str, str] | None = None):
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME (and database: SQLite
    there, or `database_url`); yields its API URL once healthy, stops it afterwards. The server's
    output goes to `log_path` (e.g. to count 'database is locked')."""
    import httpx

    port = free_port()
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port),
                        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        **(extra_env or {})}
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"

    def healthy():
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode} (log: {log_path})")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 180, interval=0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()
