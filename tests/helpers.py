"""Test-only sources and process helpers, importable by Dask workers (local and SLURM)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import tensorstore as ts
import zarr

from bioimage_tasks.io import UrlPath, as_source

CHUNKS = (16, 16, 16)  # of the arrays put_s3 writes


@dataclass(frozen=True)
class SlowSource:
    """A file-backed source that sleeps on every read, so a run lasts long enough to kill
    workers in the middle of it; with `gate`, every read also waits until that file exists, so a
    run stays alive until a test lets it go (on threads and in worker processes alike)."""

    path: str
    delay: float
    gate: str | None = None

    def _inner(self):
        return as_source(self.path)

    shape = property(lambda self: self._inner().shape)
    dtype = property(lambda self: self._inner().dtype)
    write_unit = property(lambda self: self._inner().write_unit)

    @property
    def source(self):
        """The data read slowly; with `input_interval` this makes block signatures see through
        the delay (signatures.py), so a rerun from the path itself resumes."""
        return self._inner()

    def input_interval(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        return start, stop

    def fingerprint(self) -> dict:
        return self._inner().fingerprint()  # the same data, read slowly

    def __getitem__(self, key) -> np.ndarray:
        time.sleep(self.delay)
        if self.gate is not None:
            wait_for(lambda: os.path.exists(self.gate), 300, interval=0.05)
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
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(name_prefix)]


def zarr_input(
    folder, image: np.ndarray, chunks, *, container: str = "in.zarr", name: str = "raw", **create
) -> str:
    """Write `image` with zarr-python (not our code) as array `name` of the zarr container
    `folder/container` (made if new), of the image's shape and dtype unless `create` says
    otherwise (e.g. a big-endian dtype, zarr_format=2); return the input string the API and the
    flows take, '<folder>/<container>/<name>'."""
    store = f"{folder}/{container}"
    create = {"shape": image.shape, "dtype": image.dtype} | create
    zarr.create_array(store=store, name=name, chunks=chunks, **create)[:] = image
    return f"{store}/{name}"


def records_dir(array_dir: str) -> str:
    """The single run-key folder of block records under an output array's folder."""
    base = os.path.join(array_dir, ".bioimage-tasks", "blocks")
    (key,) = os.listdir(base)
    return os.path.join(base, key)


def record_times(array_dir: str) -> dict[int, float]:
    """When each recorded block of the output's single run key was last written (s since the
    epoch)."""
    from bioimage_tasks.records import BlockRecords

    return {
        block_id: entry.time_ns / 1e9
        for block_id, entry in BlockRecords(records_dir(array_dir)).entries().items()
    }


def executed_since(array_dir: str, started: float) -> set[int]:
    """Blocks a run starting at `started` executed, from the output's own block records."""
    return {block_id for block_id, t in record_times(array_dir).items() if t >= started}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_deployments(
    api_url: str, data_dir, downsample_options: str = "{}", copy_options: str = "{}"
):
    """deployments/serve.py's two deployments (their option dicts as Python source) served against
    `api_url` from a process of their own; yields once both are registered, stops it afterwards."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    script = (
        "import sys; sys.path.insert(0, 'deployments'); from serve import build_deployments; "
        "from prefect import serve; "
        f"serve(*build_deployments({str(data_dir)!r}, {downsample_options}, {copy_options}))"
    )
    env = os.environ | {"PREFECT_API_URL": api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    served = subprocess.Popen([sys.executable, "-c", script], cwd=repo, env=env)
    try:

        def registered():
            with (
                temporary_settings(updates={PREFECT_API_URL: api_url}),
                get_client(sync_client=True) as client,
            ):
                return len(client.read_deployments()) == 2

        wait_for(registered, 120, interval=1)
        yield
    finally:
        served.terminate()
        served.wait(timeout=60)


@contextlib.contextmanager
def prefect_server_process(
    home: str,
    database_url: str | None = None,
    log_path: str | None = None,
    extra_env: dict[str, str] | None = None,
):
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME (and database: SQLite
    there, or `database_url`); yields its API URL once healthy, stops it afterwards. The server's
    output goes to `log_path` (e.g. to count 'database is locked')."""
    import httpx

    port = free_port()
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra_env or {}),
    }
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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


def log_interval(log_dir: str, kind: str, start: float, end: float, key) -> None:
    """Record that a `kind` ("read", "write") of the region `key` lasted from `start` to `end`
    (one file each, so processes never share a file)."""
    import uuid

    corner = ",".join(str(k.start) for k in key)
    with open(os.path.join(log_dir, f"{kind}-{os.getpid()}-{uuid.uuid4().hex}"), "w") as stream:
        stream.write(f"{start} {end} {corner}")


def logged_intervals(log_dir: str, kind: str) -> list[tuple[float, float, int, str]]:
    """The (start, end, pid, region corner) that `log_interval` recorded for `kind`, by start."""
    found = []
    for name in os.listdir(log_dir):
        if name.startswith(f"{kind}-"):
            with open(os.path.join(log_dir, name)) as stream:
                start, end, corner = stream.read().split()
            found.append((float(start), float(end), int(name.split("-")[1]), corner))
    return sorted(found)


def max_overlap(intervals) -> int:
    """The largest number of intervals in progress at one time."""
    points = sorted(
        [(s, 1) for s, e, *_ in intervals] + [(e, -1) for s, e, *_ in intervals],
        key=lambda p: (p[0], p[1]),
    )
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


@dataclass(frozen=True)
class TimedReads:
    """A file-backed source whose reads each take at least `delay` s and are logged in `log_dir`."""

    path: str
    delay: float
    log_dir: str

    def _inner(self):
        return as_source(self.path)

    shape = property(lambda self: self._inner().shape)
    dtype = property(lambda self: self._inner().dtype)
    write_unit = property(lambda self: self._inner().write_unit)

    def fingerprint(self) -> dict:
        return self._inner().fingerprint()

    def __getitem__(self, key) -> np.ndarray:
        start = time.time()
        time.sleep(self.delay)
        values = self._inner()[key]
        log_interval(self.log_dir, "read", start, time.time(), key)
        return values


@dataclass(frozen=True)
class TimedWrites:
    """An existing zarr output (path) whose writes each take at least `delay` s (a slow shared
    file system) and are logged in `log_dir`, to measure how many blocks write at once."""

    path: str
    delay: float
    log_dir: str

    def _inner(self):
        from bioimage_tasks.io import ContainerPath

        return ContainerPath.parse(self.path, "output").open("r+")

    shape = property(lambda self: self._inner().shape)
    dtype = property(lambda self: self._inner().dtype)
    write_unit = property(lambda self: self._inner().write_unit)
    directory = property(lambda self: self._inner().directory)
    array = property(lambda self: self._inner().array)
    name = property(lambda self: self.path)

    def fingerprint(self) -> dict:
        return self._inner().fingerprint()

    def get_attribute(self, name: str):
        return self._inner().get_attribute(name)

    def set_attribute(self, name: str, value) -> None:
        self._inner().set_attribute(name, value)

    def __getitem__(self, key) -> np.ndarray:
        return self._inner()[key]

    def start_write(self, key, values):
        start = time.time()
        time.sleep(self.delay)
        self._inner().write(key, values)
        log_interval(self.log_dir, "write", start, time.time(), key)
        return lambda: None

    def write(self, key, values) -> None:
        self.start_write(key, values)()


def put_s3(url: str, x: np.ndarray, zarr_format: int = 3) -> None:
    """Write `x` to a zarr array at an s3:// URL with tensorstore (not our code)."""
    path = UrlPath.parse(url, "test")
    driver = "zarr3" if zarr_format == 3 else "zarr"
    metadata = (
        {
            "shape": list(x.shape),
            "data_type": x.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
        }
        if zarr_format == 3
        else {"shape": list(x.shape), "dtype": x.dtype.str, "chunks": list(CHUNKS)}
    )
    if zarr_format == 2:
        path.location("").write(".zgroup", b'{"zarr_format": 2}')
    ts.open(
        {"driver": driver, "kvstore": path.location().spec, "metadata": metadata}, create=True
    ).result()[...].write(x).result()


def records_location(url: str, options: dict | None = None):
    """The single run key's records of an output at `url`."""
    location = (
        UrlPath.parse(url, "test", options).location().child(".bioimage-tasks").child("blocks")
    )
    (key,) = location.names()
    return location.child(key)


def read_s3(url: str) -> np.ndarray:
    """The zarr v3 array at an s3:// URL, read with tensorstore (not our code)."""
    return (
        ts.open({"driver": "zarr3", "kvstore": UrlPath.parse(url, "test").location().spec})
        .result()
        .read()
        .result()
    )
