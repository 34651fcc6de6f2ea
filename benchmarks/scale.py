"""Orchestration at many blocks: does the calling process's memory stay flat as the number of
blocks grows, and what does a block cost?

An all-fill input with 16^3 chunks (a zarr array with no chunk file: every read is the fill
value) is downsampled by 2 with `mean` into an output with 16^3 chunks (all-fill output chunks
are not stored, so the disk holds only block records), on 2 threads. Each case runs in a child
process that reports its peak RSS and CPU time. Cases: `--blocks` counts (the grid nearest
each, 16^3 blocks), through the plain API and, with `--flow`, through `downsample_flow` on the
embedded Prefect; and the same 2048^3 input (1024^3 output, 262,144 chunks) in 4,096 blocks of
64^3 against 262,144 blocks of 16^3: the same chunk I/O, 64x the blocks.

    python benchmarks/scale.py --blocks 32768,262144 --flow
    python benchmarks/scale.py --blocks 1000000,10000000

A case of the plain API prints its progress (time, CPU per block, RSS) to stderr every 5 %.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

BLOCK = 16
CHUNK = 16  # input and output chunks


def side_for(n_blocks: int, block: int) -> int:
    """Output side (voxels) of a cubic grid of about `n_blocks` blocks of `block`^3."""
    return round(n_blocks ** (1 / 3)) * block


def child(request: dict) -> None:
    """Create the all-fill input, run the case, print one JSON line of figures."""
    import zarr

    side, block, root = request["side"], request["block"], request["root"]
    zarr.create_array(
        store=os.path.join(root, "in.zarr"),
        name="raw",
        shape=(2 * side,) * 3,
        dtype="uint8",
        chunks=(CHUNK,) * 3,
        overwrite=True,
    )
    output = os.path.join(root, "out.zarr", "s1")
    zarr.create_array(
        store=os.path.join(root, "out.zarr"),
        name="s1",
        shape=(side,) * 3,
        dtype="uint8",
        chunks=(CHUNK,) * 3,
        overwrite=True,
    )
    if request["flow"]:
        from flows import downsample_flow as run
    else:
        from bioimage_tasks import downsample as run
    cpu, wall = time.process_time(), time.perf_counter()
    watch_progress(cpu, wall)
    run(
        os.path.join(root, "in.zarr", "raw"),
        2,
        output,
        method="mean",
        block_shape=(block,) * 3,
        num_workers=2,
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    blocks = math.ceil(side / block) ** 3
    print(
        json.dumps(
            {
                "blocks": blocks,
                "wall": wall,
                "cpu": cpu,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def watch_progress(cpu: float, wall: float) -> None:
    """Print to stderr, every 5 % of the blocks, the time, CPU per block and RSS so far: a run
    of hours shows how far it is (the plain API's progress; a flow reports its own)."""
    from bioimage_tasks.plain import progress_listener

    shown = [0]

    def show_progress(done: int, total: int) -> None:
        twentieths = done * 20 // max(total, 1)
        if done and twentieths > shown[0]:
            shown[0] = twentieths
            elapsed, used = time.perf_counter() - wall, time.process_time() - cpu
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"  {time.strftime('%H:%M:%S')} {done:,} of {total:,} blocks, {elapsed:.0f} s, "
                f"CPU {used / done * 1e6:.0f} us/block, RSS now {rss_now_mb():.0f} MB, "
                f"peak {peak:.0f} MB, ETA {elapsed / done * (total - done):.0f} s",
                file=sys.stderr,
                flush=True,
            )

    progress_listener.set(show_progress)


def rss_now_mb() -> float:
    """The resident set of this process now (Linux), in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def run_case(side: int, block: int, flow: bool) -> dict:
    """One case in a fresh child process, in a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix="scale-") as root:
        request = {"side": side, "block": block, "flow": flow, "root": root}
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(request)],
            stdout=subprocess.PIPE,  # its progress (stderr) passes through
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(label: str, figures: dict) -> None:
    per_block = figures["cpu"] / figures["blocks"] * 1e6
    print(
        f"{label:32} {figures['blocks']:>10,} blocks  wall {figures['wall']:8.1f} s  "
        f"CPU {per_block:6.0f} us/block"
        f"  peak RSS {figures['peak_rss_mb']:7.0f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--blocks", default="32768,262144", help="comma-separated block counts (16^3 blocks)"
    )
    parser.add_argument(
        "--flow", action="store_true", help="also through downsample_flow (embedded Prefect)"
    )
    parser.add_argument(
        "--no-block-sizes", action="store_true", help="skip 64^3 against 16^3 blocks at 1024^3"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    counts = [int(n) for n in args.blocks.split(",")]
    for engine in ["plain", "flow"] if args.flow else ["plain"]:
        figures = []
        for n in counts:  # each line as soon as its case ends: the largest may take an hour
            figures.append(run_case(side_for(n, BLOCK), BLOCK, engine == "flow"))
            show(f"{engine}, {BLOCK}^3 blocks", figures[-1])
        if len(figures) > 1:
            print(
                f"{engine}: peak RSS "
                f"{figures[-1]['peak_rss_mb'] / figures[0]['peak_rss_mb']:.2f}x from "
                f"{figures[0]['blocks']:,} to {figures[-1]['blocks']:,} blocks",
                flush=True,
            )
    if not args.no_block_sizes:
        small, large = run_case(1024, 16, False), run_case(1024, 64, False)
        show("plain, 1024^3 in 16^3 blocks", small)
        show("plain, 1024^3 in 64^3 blocks", large)
        print(
            f"time of 16^3 blocks / 64^3 blocks: {small['wall'] / large['wall']:.2f}x", flush=True
        )


if __name__ == "__main__":
    main()
