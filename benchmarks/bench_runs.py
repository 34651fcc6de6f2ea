"""The run infrastructure the benchmark scripts share: the run space (a temporary folder and one
`prefect server start` for the whole benchmark), contenders run in fresh child processes with
their peak RSS sampled, the rotation of the run order and the common command-line arguments.

Imports only the standard library at the top, so the peer venv (no bioimage_tasks) can load it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downsample_contenders import Case

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT_TAG = "BENCH-RESULT "
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "bioimage-tasks-bench"
SETTLE_SECONDS = 3.0  # after a warm-up flow call, for the server to store its events
SERVER_PID_VARIABLE = "BIOIMAGE_TASKS_BENCH_SERVER_PID"  # children report the server's CPU


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the forking parent's peak over
    exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def settle_disk() -> None:
    """Write back every dirty page before a clock starts: earlier runs and the untimed preparation
    leave dirty pages (zarr-python writes without fsync), which the kernel would write back 30 s
    later, in the middle of whichever contender runs then."""
    os.sync()


def fresh_page_cache(inputs: list[Path]) -> bool:
    """Write back, then drop the page cache (where this process may: root) and read `inputs` back
    in: every run starts with its inputs cached and the rest of memory free. Earlier runs'
    outputs otherwise fill the cache, and the kernel reclaims it inside whichever run comes next
    (measured: the same concatenated conversion took 2.0-3.5 s, its CPU 3.5-5.9 s). False when
    the cache could not be dropped (then only the write-back is done)."""
    settle_disk()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("1")
    except OSError:
        return False
    for path in inputs:
        read_through(path)
    return True


def read_through(path: Path) -> None:
    """Read `path` once, untimed, so that it is in the page cache for every run: otherwise the
    first contender alone reads it from disk (measured: 12.8 s against 7.2 s for the same run)."""
    with open(path, "rb") as file:
        while file.read(2**24):
            pass


class TreeRssSampler(threading.Thread):
    """Peak summed RSS of a process and all its descendants, sampled every 50 ms; with
    `limit_bytes`, the whole tree is SIGKILLed once its RSS exceeds it (`killed_at` says when)."""

    def __init__(self, pid: int, limit_bytes: float | None = None):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.limit_bytes = limit_bytes
        self.killed_at: int | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stopped.is_set():
            try:
                members = [self.process, *self.process.children(recursive=True)]
                total = 0
                for member in members:
                    try:
                        total += member.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
                if self.limit_bytes is not None and total > self.limit_bytes:
                    self.killed_at = total
                    for member in reversed(members):
                        try:
                            member.kill()
                        except psutil.Error:
                            pass
                    return
            except psutil.Error:
                return
            self.stopped.wait(0.05)


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prefect_server_command(port: int) -> list[str]:
    """`prefect server start` on loopback `port`, run by this Python."""
    where = ["--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-m", "prefect", "server", "start", *where]


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float = 180) -> bool:
    """Whether the server `process` at API `url` answered /health within `seconds` (False at once
    if it exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except OSError:
            if process.poll() is not None:
                return False
            time.sleep(0.5)
    return False


class PrefectServer:
    """One `prefect server start` on a free loopback port for the whole benchmark, so no flow call
    pays an ephemeral server's start-up; PREFECT_HOME is a temporary folder."""

    def __init__(self, home: Path):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        self.env = {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        self.log = open(home / "server.log", "w")
        self.process = subprocess.Popen(
            prefect_server_command(port),
            env=os.environ | self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if not wait_until_healthy(self.url, self.process):
            self.stop()
            raise RuntimeError(f"the Prefect server did not start; see {home / 'server.log'}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class RunSpace:
    """A temporary folder under DEFAULT_ROOT for the runs' outputs, one PrefectServer for the whole
    benchmark, and the environment every child run gets (that server, this checkout first on the
    path, one OpenMP thread)."""

    def __init__(self, prefix: str):
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=DEFAULT_ROOT))
        (self.work / "prefect").mkdir()
        self.server = PrefectServer(self.work / "prefect")
        self.env = (
            os.environ
            | self.server.env
            | {"PREFECT_API_URL": self.server.url, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            | {SERVER_PID_VARIABLE: str(self.server.process.pid)}
        )

    def output(self, label: str, suffix: str = ".zarr") -> Path:
        """A new output path in the work folder (numbered by what the folder holds now)."""
        return self.work / f"{label}-{len(os.listdir(self.work))}{suffix}"

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def wanted_names(option: str) -> list[str]:
    """The lower-cased substrings of a comma-separated --contenders option."""
    return [w.strip().lower() for w in option.split(",") if w.strip()]


def selected(name: str, wanted: list[str]) -> bool:
    """Whether contender `name` matches one of the --contenders substrings (all do if none)."""
    return not wanted or any(w in name.lower() for w in wanted)


def rotation(names: list[Any], repeat: int) -> list[Any]:
    """The run order in `repeat`: contenders alternate, the first one moving back each repeat."""
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def mem_available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


def measure(
    python: str, env: dict[str, str], request: dict[str, Any], timeout: float
) -> tuple[float, float]:
    """Run one contender in a fresh process; (seconds, peak tree RSS MB). Raises on failure."""
    result, rss_mb = run_child(python, env, request, timeout)
    return result["seconds"], rss_mb


def run_child(
    python: str,
    env: dict[str, str],
    request: dict[str, Any],
    timeout: float,
    script: Path = HERE / "bench.py",
    max_rss_mb: float | None = None,
) -> tuple[dict[str, Any], float]:
    """Run `script --run-one REQUEST` in a fresh process: (its last RESULT line, peak tree RSS MB).
    Raises RuntimeError on failure, on timeout, or when the tree's RSS exceeded `max_rss_mb`
    (then the tree was killed: "killed at X GB")."""
    child = subprocess.Popen(
        [python, str(script), "--run-one", json.dumps(request)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    sampler = TreeRssSampler(child.pid, None if max_rss_mb is None else max_rss_mb * 2**20)
    sampler.start()
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    finally:
        sampler.stopped.set()
        sampler.join()
    if sampler.killed_at is not None:
        raise RuntimeError(
            f"killed at {sampler.killed_at / 2**30:.2f} GB (--max-rss {max_rss_mb / 1024:.2f} GB)"
        )
    results = [
        line[len(RESULT_TAG) :] for line in stdout.splitlines() if line.startswith(RESULT_TAG)
    ]
    if child.returncode != 0 or not results:
        raise RuntimeError(
            f"exit {child.returncode}: "
            f"{stderr.strip().splitlines()[-1] if stderr.strip() else stdout[-500:]}"
        )
    result = json.loads(results[-1])
    return result, max(sampler.peak / 2**20, result["self_rss_mb"])


def add_case_arguments(
    parser: argparse.ArgumentParser, cases: dict[str, Case], default_size: int
) -> None:
    """--size, --repeats and --cases (a subset of `cases`)."""
    parser.add_argument("--size", type=int, choices=(256, 512, 1024), default=default_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cases", default=",".join(cases), help=f"comma-separated subset of {', '.join(cases)}"
    )


def add_child_arguments(parser: argparse.ArgumentParser, timeout: float, data_help: str) -> None:
    """--max-rss, --timeout, --out, --data and --peer-venv of scripts whose contenders run by
    `run_child` with a memory limit."""
    parser.add_argument(
        "--max-rss",
        type=float,
        default=8.0,
        help="GB: a contender's process tree above it is killed",
    )
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per contender run")
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT / "results")
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT / "data", help=data_help)
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_ROOT / "peer-venv")
