"""Ten back-to-back short runs against `prefect server start` on SQLite and on PostgreSQL: the
time of each run and how often the client was told "database is locked" and retried.

    .venv/bin/python benchmarks/backtoback.py [--runs 10] [--size 64] [--json out.json]

For each database it starts a fresh server (SQLite in a temporary PREFECT_HOME; PostgreSQL via
scripts/postgres-test-server.sh in a fresh database, which needs root), then a client process
runs the same small downsample `--runs` times in a row (a new output each time, so nothing is
resumed), as a pyramid's levels or a benchmark loop do. Retries are counted from the client's
own retry log lines ("Received response with retryable status code 503", Prefect's answer to
a locked SQLite) and the "database is locked" errors the server logs with
PREFECT_SERVER_LOG_RETRYABLE_ERRORS=true."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_runs import free_port, prefect_server_command, wait_until_healthy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRY_LINE = "Received response with retryable status code 503"
RETRYABLE = "Encountered retryable exception in request"  # the server's log entry for each 503


def client(runs: int, size: int, work: str) -> dict:
    """Run in the client process: `runs` downsamples in a row; per-run seconds and retry lines."""
    import logging

    import numpy as np
    import zarr

    from flows import downsample_flow

    retries = []

    class CountRetries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if RETRY_LINE in record.getMessage():
                retries.append(time.perf_counter())

    prefect_client_log = logging.getLogger("prefect.client")
    prefect_client_log.setLevel(logging.DEBUG)
    prefect_client_log.addHandler(CountRetries())
    image = np.random.default_rng(0).integers(0, 255, (size,) * 3, dtype=np.uint8)
    zarr.create_array(
        store=f"{work}/in.zarr", name="raw", shape=image.shape, dtype="uint8", chunks=(32,) * 3
    )[:] = image
    seconds = []
    for run in range(runs):
        started = time.perf_counter()
        downsample_flow(
            f"{work}/in.zarr/raw",
            2,
            f"{work}/out.zarr/s{run}",
            order=1,
            anti_aliasing=True,
            num_workers=2,
            block_shape=(16,) * 3,
        )
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds, "client_retries": len(retries)}


def server_env(work: str, port: int, database_url: str | None) -> dict[str, str]:
    """The server's environment: PREFECT_HOME in `work`, `port`, each 503 logged with its cause,
    the database at `database_url` (None: SQLite)."""
    env = os.environ | {
        "PREFECT_HOME": f"{work}/prefect",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
    }
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


def run_client(env: dict[str, str], url: str, runs: int, size: int, work: str) -> dict:
    """`client` in a fresh process against the server at `url`; its result."""
    code = (
        f"import json, sys; sys.path.insert(0, {REPO!r}); "
        f"sys.path.insert(0, {os.path.dirname(__file__)!r}); "
        f"from backtoback import client; print(json.dumps(client({runs}, {size}, {work!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env | {"PREFECT_API_URL": url},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(database: str, database_url: str | None, runs: int, size: int) -> dict:
    """Start a server on `database_url` (None: SQLite), run the client against it, stop it."""
    work = tempfile.mkdtemp(prefix=f"backtoback-{database}-")
    port = free_port()
    env = server_env(work, port, database_url)
    log_path = f"{work}/server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            prefect_server_command(port), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        if not wait_until_healthy(url, server):
            raise RuntimeError(f"{database} server did not start; see {log_path}")
        result = run_client(env, url, runs, size, work)
    finally:
        server.terminate()
        server.wait(timeout=60)
    with open(log_path) as stream:
        entries = stream.read().split(RETRYABLE)[1:]  # each with its traceback
    result["server_locked_errors"] = sum("database is locked" in entry for entry in entries)
    return result


def postgres_url() -> str:
    script = os.path.join(REPO, "scripts", "postgres-test-server.sh")
    subprocess.run(["bash", script, "start"], check=True, capture_output=True, text=True)
    fresh = subprocess.run(
        ["bash", script, "fresh", "bioimage_tasks_backtoback"],
        check=True,
        capture_output=True,
        text=True,
    )
    return fresh.stdout.strip().splitlines()[-1]


def table(results: dict[str, dict], runs: int) -> str:
    lines = [
        f"| database | {runs} runs total (s) | median run (s) | slowest run (s) | runs over 2 s | "
        "client retries (503) | 'database is locked' in server log |",
        "|---|---|---|---|---|---|---|",
    ]
    for database, r in results.items():
        s = r["seconds"]
        lines.append(
            f"| {database} | {sum(s):.1f} | {statistics.median(s):.2f} | {max(s):.2f} | "
            f"{sum(x > 2 for x in s)} | {r['client_retries']} | {r['server_locked_errors']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="edge of the cubic uint8 input")
    parser.add_argument("--json", help="also save the results here")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database only")
    args = parser.parse_args()
    results = {}
    for database in ("sqlite", "postgresql"):
        if args.only and database != args.only:
            continue
        url = postgres_url() if database == "postgresql" else None
        results[database] = measure(database, url, args.runs, args.size)
        print(
            f"{database}: " + ", ".join(f"{s:.2f}" for s in results[database]["seconds"]),
            flush=True,
        )
    print(table(results, args.runs))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
