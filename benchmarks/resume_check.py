"""The resume check of a finished run at scale: how long a rerun takes to learn that every block is
done (read the block records, compute every block's input signature from the input's chunk files,
compare). No Prefect, no voxels: the input's chunk files are tiny stand-ins (only their size and
mtime are looked at), the records are written as a finished run writes them.

    # 10**5 blocks, a copy (1 chunk per block)
    .venv/bin/python benchmarks/resume_check.py
    # a x2 window downsample (8 chunks per block)
    .venv/bin/python benchmarks/resume_check.py --factor 2
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from types import SimpleNamespace

import zarr

from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.io import as_source
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.resampling import WindowedSource
from bioimage_tasks.signatures import job_signatures

CHUNK = 64


def grid_for(n_blocks: int) -> tuple[int, int, int]:
    """A 3-D grid of about `n_blocks` blocks."""
    side = round(n_blocks ** (1 / 3))
    return side, side, math.ceil(n_blocks / side**2)


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument(
        "--factor", type=int, default=1, help="1: a copy; 2: a x2 window downsample"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dir", default=None, help="where to create the data (default: a temporary folder)"
    )
    return parser.parse_args()


def make_input(root: str, in_shape: tuple[int, ...]) -> int:
    """The input array `root`/in.zarr/raw with a one-byte stand-in file for every chunk; returns
    how many chunk files there are."""
    array = zarr.create_array(
        store=os.path.join(root, "in.zarr"),
        name="raw",
        shape=in_shape,
        dtype="uint8",
        chunks=(CHUNK,) * 3,
        overwrite=True,
    )
    started = time.perf_counter()
    in_grid = [s // CHUNK for s in in_shape]
    for i in range(in_grid[0]):
        for j in range(in_grid[1]):
            folder = os.path.join(array.store.root, "raw", "c", str(i), str(j))
            os.makedirs(folder, exist_ok=True)
            for k in range(in_grid[2]):
                with open(os.path.join(folder, str(k)), "wb") as stream:
                    stream.write(b"x")
    n_files = math.prod(in_grid)
    print(
        f"{n_files} input chunk files created in {time.perf_counter() - started:.1f} s under {root}"
    )
    return n_files


def record_finished_run(job: SimpleNamespace, block_ids: list[int], records: BlockRecords) -> None:
    """Writes every block's record as a finished run does (printed: how long, how many files)."""
    started = time.perf_counter()
    signatures = job_signatures(job, block_ids)
    for block_id in block_ids:
        records.mark_done(block_id, signatures[block_id])
    seconds = time.perf_counter() - started
    print(
        f"{len(block_ids)} blocks recorded in {seconds:.1f} s "
        f"({seconds / len(block_ids) * 1e6:.0f} us per record); "
        f"{sum(len(f) for _, _, f in os.walk(records.directory))} record files in "
        f"{sum(len(d) for _, d, _ in os.walk(records.directory))} folders"
    )


def time_resume_check(
    job: SimpleNamespace, block_ids: list[int], records: BlockRecords, n_files: int, repeat: int
) -> None:
    """One resume check of every block, timed by step and printed."""
    timings = {}
    started = time.perf_counter()
    recorded = records.recorded(block_ids)
    timings["read records"] = time.perf_counter() - started
    started = time.perf_counter()
    signatures = job_signatures(job, block_ids)
    timings["signatures"] = time.perf_counter() - started
    started = time.perf_counter()
    done = records.done_among(block_ids, signatures)
    timings["check (records + compare)"] = time.perf_counter() - started
    total = timings["signatures"] + timings["check (records + compare)"]
    assert len(recorded) == len(done) == len(block_ids)
    print(
        f"repeat {repeat + 1}: resume check of {len(block_ids)} blocks ({n_files} input files) "
        f"{total:.2f} s = "
        + ", ".join(
            f"{name} {value:.2f} s" for name, value in timings.items() if name != "read records"
        )
        + f" (records alone {timings['read records']:.2f} s)"
    )


def main() -> None:
    args = parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="resume-check-")
    out_grid = grid_for(args.blocks)
    n_files = make_input(root, tuple(g * CHUNK * args.factor for g in out_grid))
    source = as_source(os.path.join(root, "in.zarr", "raw"))
    view = source if args.factor == 1 else WindowedSource(source, (args.factor,) * 3, "mean")
    job = SimpleNamespace(source=view, mask=None, grid=BlockGrid(view.shape, (CHUNK,) * 3))
    block_ids = list(range(job.grid.n_blocks))
    records = BlockRecords(os.path.join(root, "out.zarr", "s0", ".bioimage-tasks", "blocks", "key"))
    record_finished_run(job, block_ids, records)
    for repeat in range(args.repeats):
        time_resume_check(job, block_ids, records, n_files, repeat)


if __name__ == "__main__":
    main()
