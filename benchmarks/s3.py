"""Object storage against local disk on the same data, in one run: S3 is a moto_server on loopback
(a Python server, so its absolute speed says little: read the ratios), local disk is a temporary
folder. Ours goes through tensorstore's s3 kvstore; the peer is zarr-python over s3fs.

    .venv/bin/python benchmarks/s3.py                      # 256^3 uint8, 64^3 chunks, 3 repeats
    .venv/bin/python benchmarks/s3.py --size 128 --repeats 5

Cases (medians over the repeats): reading the whole array and writing it into a new one, with
tensorstore and with zarr-python; a mean x2 downsample with our flow (threads x2) and with
zarr-python block by block (one 64^3 output chunk per task, threads x2); and the rerun of our
finished downsample (reads records and signatures, writes nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorstore as ts
import zarr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_runs import PrefectServer  # noqa: E402

BUCKET, CHUNK = "bench", 64


def start_moto(work: Path) -> tuple[subprocess.Popen, str]:
    """moto_server on a free loopback port, answering; returns the process and its endpoint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "moto.log", "w"),
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/").close()
            urllib.request.urlopen(
                urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
            ).close()
            return server, endpoint
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"moto_server did not start; see {work / 'moto.log'}")


class Places:
    """The same array, and fresh outputs, on local disk and on S3, for tensorstore and
    zarr-python."""

    def __init__(self, work: Path, endpoint: str) -> None:
        self.work, self.endpoint, self.count = work, endpoint, 0
        self.fs_options = {"endpoint_url": endpoint}

    def input(self, where: str) -> str:
        return f"{self.work}/in.zarr/raw" if where == "local" else f"s3://{BUCKET}/in.zarr/raw"

    def new_output(self, where: str) -> str:
        self.count += 1
        return (
            f"{self.work}/out{self.count}.zarr/a"
            if where == "local"
            else f"s3://{BUCKET}/out{self.count}.zarr/a"
        )

    def zarr_open(self, path: str, **kwargs) -> zarr.Array:
        """zarr-python: LocalStore on disk, FsspecStore (s3fs) on S3."""
        container, key = path.rsplit("/", 1)
        options = {"storage_options": self.fs_options} if path.startswith("s3://") else {}
        return zarr.open_array(store=container, path=key, **options, **kwargs)

    def ts_spec(self, path: str) -> dict:
        if not path.startswith("s3://"):
            return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path + "/"}}
        bucket, key = path[len("s3://") :].split("/", 1)
        return {
            "driver": "zarr3",
            "kvstore": {
                "driver": "s3",
                "bucket": bucket,
                "path": key + "/",
                "endpoint": self.endpoint,
                "aws_region": "us-east-1",
            },
        }


def zarr_blockwise_mean(source: zarr.Array, target: zarr.Array, workers: int) -> None:
    """The peer's downsample: per output chunk, read its 2x input region, mean, round, write."""
    grid = [range(0, s, CHUNK) for s in target.shape]

    def one(corner: tuple[int, int, int]) -> None:
        out = tuple(slice(c, min(c + CHUNK, s)) for c, s in zip(corner, target.shape))
        x = source[tuple(slice(2 * o.start, 2 * o.stop) for o in out)].astype(np.float64)
        n = [o.stop - o.start for o in out]
        target[out] = np.rint(x.reshape(n[0], 2, n[1], 2, n[2], 2).mean(axis=(1, 3, 5))).astype(
            target.dtype
        )

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, [(i, j, k) for i in grid[0] for j in grid[1] for k in grid[2]]))


def cases(places: Places, x: np.ndarray, workers: int) -> dict[str, Callable[[str], None]]:
    from flows import downsample_flow

    small = tuple(s // 2 for s in x.shape)
    finished: dict[str, str] = {}

    def ours_downsample(where: str) -> None:
        finished[where] = places.new_output(where)
        downsample_flow(places.input(where), 2, finished[where], method="mean", num_workers=workers)

    def zarr_downsample(where: str) -> None:
        target = places.zarr_open(
            places.new_output(where), mode="w", shape=small, dtype=x.dtype, chunks=(CHUNK,) * 3
        )
        zarr_blockwise_mean(places.zarr_open(places.input(where), mode="r"), target, workers)

    def ts_write(where: str) -> None:
        spec = places.ts_spec(places.new_output(where)) | {
            "metadata": {
                "shape": list(x.shape),
                "data_type": "uint8",
                "codecs": [{"name": "bytes"}, {"name": "zstd"}],
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [CHUNK] * 3}},
            }
        }
        ts.open(spec, create=True).result()[...].write(x).result()

    def zarr_write(where: str) -> None:
        places.zarr_open(
            places.new_output(where), mode="w", shape=x.shape, dtype=x.dtype, chunks=(CHUNK,) * 3
        )[...] = x

    return {
        "read whole array, tensorstore": lambda w: (
            ts.open(places.ts_spec(places.input(w))).result()[...].read().result()
        ),
        "read whole array, zarr-python": lambda w: places.zarr_open(places.input(w), mode="r")[...],
        "write whole array, tensorstore": ts_write,
        "write whole array, zarr-python": zarr_write,
        f"mean x2, ours (flow, threads x{workers})": ours_downsample,
        "rerun of the finished mean x2, ours": lambda w: downsample_flow(
            places.input(w), 2, finished[w], method="mean", num_workers=workers
        ),
        f"mean x2, zarr-python per chunk (threads x{workers})": zarr_downsample,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bioimage-tasks-bench/results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    (work / "prefect").mkdir()
    moto, endpoint = start_moto(work)
    server = PrefectServer(work / "prefect")
    os.environ.update(
        server.env
        | {
            "PREFECT_API_URL": server.url,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
        }
    )
    try:
        from bioimage_tasks.sample_data import smooth_image

        x = smooth_image((args.size,) * 3)
        places = Places(work, endpoint)
        for where in ("local", "s3"):  # the same input, written by zarr-python (zstd, 64^3 chunks)
            places.zarr_open(
                places.input(where), mode="w", shape=x.shape, dtype=x.dtype, chunks=(CHUNK,) * 3
            )[...] = x
        from flows import downsample_flow

        downsample_flow(x[:64, :64, :64], 2)  # warm-up: the first flow call pays Prefect's start
        timings: dict[str, dict[str, list[float]]] = {}
        for repeat in range(args.repeats):
            for name, run in cases(places, x, args.workers).items():
                for where in ("local", "s3"):
                    started = time.perf_counter()
                    run(where)
                    timings.setdefault(name, {}).setdefault(where, []).append(
                        time.perf_counter() - started
                    )
            print(f"repeat {repeat + 1} of {args.repeats} done", flush=True)
        report(timings, args, work)
    finally:
        server.stop()
        moto.terminate()


def report(
    timings: dict[str, dict[str, list[float]]], args: argparse.Namespace, work: Path
) -> None:
    median = {
        name: {w: statistics.median(v) for w, v in by.items()} for name, by in timings.items()
    }
    print(
        f"\n{args.size}^3 uint8, {CHUNK}^3 chunks, zstd; medians of {args.repeats}; "
        "S3 = moto_server on loopback"
    )
    print("| case | local (s) | S3 (s) | S3 / local |\n|---|---|---|---|")
    for name, m in median.items():
        print(f"| {name} | {m['local']:.2f} | {m['s3']:.2f} | {m['s3'] / m['local']:.1f} |")
    pairs = [
        ("read whole array, zarr-python", "read whole array, tensorstore"),
        ("write whole array, zarr-python", "write whole array, tensorstore"),
        (
            next(n for n in median if n.startswith("mean x2, zarr-python")),
            next(n for n in median if n.startswith("mean x2, ours")),
        ),
    ]
    print("\n| zarr-python / ours (tensorstore) | local | S3 |\n|---|---|---|")
    for peer, ours in pairs:
        print(
            f"| {ours.split(',')[0]} | {median[peer]['local'] / median[ours]['local']:.1f} | "
            f"{median[peer]['s3'] / median[ours]['s3']:.1f} |"
        )
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"bench-s3-{args.size}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"size": args.size, "repeats": args.repeats, "timings": timings, "work": str(work)},
            indent=1,
        )
    )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
