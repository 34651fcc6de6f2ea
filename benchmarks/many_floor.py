"""The floor of converting many small stacks: what a pyramid per file costs with nothing but the
work itself, against `bioimage_tasks.convert` of the same files and of their concatenation.

    python benchmarks/many_floor.py [--data /tmp/stacks23b] [--repeats 3]

The floor (`czi_contenders.run_floor`) converts every stack of `czi.py many`'s folder on 2
threads: tifffile reads it, our mean kernel makes 3 levels, tensorstore writes each level as a
zarr v3 array with our chunks and codec, and one group zarr.json. It keeps no records, stamps,
leases or multiscales metadata, so it cannot resume, verify or refuse a concurrent writer: the
gap between it and ours is what that bookkeeping and the per-file checks cost. Each run is a
fresh process (czi.py's `--run-one`, as `czi.py many` runs ours) into a fresh folder, outputs
deleted after all runs; ratios are paired per repeat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import bench_runs
from czi_contenders import FLOOR, OURS
from czi_many import INODES_SETTLE, make_stacks, many_run, wait_after_deletion

FILES, PLANES, SIDE = 200, 32, 256  # czi.py many's defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/stacks23b"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--max-rss", type=float, default=12.0, help="GB; a tree above is killed")
    args = parser.parse_args()
    args.env = os.environ | {"PYTHONPATH": str(bench_runs.REPO), "OMP_NUM_THREADS": "1"}
    folder, whole = make_stacks(args.data, FILES, PLANES, SIDE)
    cases = {
        "floor": (FLOOR, str(folder / "*.ome.tif")),
        "ours files": (OURS, str(folder / "*.ome.tif")),
        "ours concatenated": (OURS, str(whole)),
    }
    work = args.data / "runs-floor"
    shutil.rmtree(work, ignore_errors=True)
    runs: dict[str, list] = {case: [] for case in cases}
    for repeat in range(args.repeats):
        for case in list(cases)[repeat % 3 :] + list(cases)[: repeat % 3]:
            contender, source = cases[case]
            output = work / f"{repeat}-{case.replace(' ', '-')}"
            result = many_run(args, source, output, contender)
            runs[case].append(result)
            print(f"  #{repeat + 1} {case}: {result['seconds']:.2f} s, CPU {result['cpu']:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    for case in ("floor", "ours files"):
        for key in ("seconds", "cpu"):
            ratios = [a[key] / b[key] for a, b in zip(runs[case], runs["ours concatenated"])]
            print(f"{case} / ours concatenated, {key}: median {statistics.median(ratios):.2f}")
    print(f"outputs deleted; waiting {INODES_SETTLE:.0f} s so that no next run follows it")
    wait_after_deletion(time.monotonic())


if __name__ == "__main__":
    main()
