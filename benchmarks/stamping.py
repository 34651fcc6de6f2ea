"""What output integrity costs (chunk_manifest.py, verify.py), without Prefect, 2 threads, 64^3
chunks, zstd: a 512^3 uint8 mean downsample by 2 and a copy, each written with and without
stamping, alternately in one process; a rerun's trust check of every block; and `verify` per GB
of stored files, for a smooth image and for noise (incompressible: big files).

    .venv/bin/python benchmarks/stamping.py [--size 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from bioimage_tasks.blockwise import BlockJob, process_batch
from bioimage_tasks.chunk_manifest import ChunkManifest, outputs_intact, stamp_writes
from bioimage_tasks.io import as_source
from bioimage_tasks.planning import block_records, plan_blockwise
from bioimage_tasks.resampling import WindowedSource
from bioimage_tasks.sample_data import smooth_image
from bioimage_tasks.verify import verify

WORKERS = 2
CASES: dict[str, Callable[[Any], Any]] = {  # the view of the input each case writes
    "downsample x2 mean": lambda source: WindowedSource(source, (2, 2, 2), "mean"),
    "copy": lambda source: source,
}


class StampClock:
    """Seconds spent inside `ChunkManifest.stamp` (summed over threads): the direct cost of
    stamping, measurable on a loaded machine where wall times swing by 2x."""

    def __init__(self) -> None:
        self.seconds, self.lock, self.original = 0.0, threading.Lock(), ChunkManifest.stamp
        clock = self

        def timed(manifest: ChunkManifest, region: Any) -> None:
            started = time.perf_counter()
            clock.original(manifest, region)
            with clock.lock:
                clock.seconds += time.perf_counter() - started

        ChunkManifest.stamp = timed


def write_input(folder: str, name: str, data: np.ndarray) -> str:
    zarr.create_array(
        store=f"{folder}/{name}.zarr",
        name="raw",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(64, 64, 64),
    )[...] = data
    return f"{folder}/{name}.zarr/raw"


def write(view: Any, output: str, stamped: bool) -> tuple[float, BlockJob]:
    """Seconds to write every block into a new output (created first), and the job."""
    shutil.rmtree(os.path.dirname(output), ignore_errors=True)
    plan = plan_blockwise(view, output)
    sink = plan.output.open()
    job = BlockJob(
        plan.source,
        stamp_writes(sink) if stamped else sink,
        plan.grid,
        None,
        block_records(plan, sink),
    )
    os.sync()  # earlier runs' dirty pages are not this run's cost
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda batch: process_batch(job, batch), batches(plan.grid.n_blocks)))
    return time.perf_counter() - started, job


def batches(n_blocks: int) -> list[range]:
    """The blocks cut into one contiguous range per worker thread."""
    cuts = [n_blocks * i // WORKERS for i in range(WORKERS + 1)]
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


def stored_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(folder)
        if ".bioimage-tasks" not in d
        for f in files
    )


def measure_writes(source: str, folder: str, repeats: int) -> None:
    clock = StampClock()
    for case, view_of in CASES.items():
        output, times = f"{folder}/{case.split()[0]}.zarr/out", {False: [], True: []}
        clock.seconds = 0.0
        for _ in range(repeats):
            for stamped in (False, True):
                times[stamped].append(write(view_of(as_source(source)), output, stamped)[0])
        for name, pick in (("median", statistics.median), ("min", min)):
            plain, stamped = pick(times[False]), pick(times[True])
            print(
                f"{case}, {name} of {repeats}: {plain:.3f} s plain, {stamped:.3f} s stamped "
                f"({100 * (stamped / plain - 1):+.1f} %)"
            )
        inside = clock.seconds / repeats
        print(
            f"  inside stamp: {inside:.3f} s per run summed over {WORKERS} threads "
            f"({100 * inside / WORKERS / statistics.median(times[True]):.1f} % of the stamped "
            "wall time if spread evenly)"
        )
        job = write(view_of(as_source(source)), output, True)[1]
        blocks = list(range(job.grid.n_blocks))
        started = time.perf_counter()
        assert outputs_intact(job, blocks) == set(blocks)
        print(f"  trust check of its {len(blocks)} blocks: {time.perf_counter() - started:.4f} s")


def measure_verify(source: str, name: str, folder: str, repeats: int) -> None:
    output = f"{folder}/{name}-copy.zarr/raw"
    write(as_source(source), output, True)
    os.sync()
    seconds = []
    for _ in range(repeats):
        report = verify(output)
        assert report.ok, report.summary()
        seconds.append(report.seconds)
    median, size = statistics.median(seconds), stored_bytes(os.path.dirname(output))
    voxels = np.prod(as_source(source).shape)
    print(
        f"verify {name} copy: {report.files} files, {size / 1e9:.3f} GB stored, {median:.3f} s: "
        f"{median / (size / 1e9):.2f} s per GB stored, "
        f"{median / (voxels / 1e9):.2f} s per GB of voxels"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    shape = (arguments.size,) * 3
    with tempfile.TemporaryDirectory(prefix="stamping-", dir=os.environ.get("TMPDIR")) as folder:
        smooth = write_input(folder, "smooth", smooth_image(shape))
        measure_writes(smooth, folder, arguments.repeats)
        noise = write_input(
            folder, "noise", np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        )
        for name, source in (("smooth", smooth), ("noise", noise)):
            measure_verify(source, name, folder, arguments.repeats)


if __name__ == "__main__":
    main()
