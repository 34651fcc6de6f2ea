"""Our exact pyramid kernels against tinybrain's (igneous's), one thread, same data, same run.

    python benchmarks/kernels.py [--sizes 256,512] [--repeats 5] [--levels 4] [--cell 32]
                                 [--cases mean-uint8,mean-uint16,mode-uint32,mode-uint64]
                                 [--ours-order F|C] [--peer-venv DIR] [--data DIR] [--no-check]
                                 [--clock wall|cpu]

Every case builds `--levels` levels of 2x2x2 from one Fortran-ordered volume held in memory:
ours with `bioimage_tasks.kernels.pyramid.pyramid_levels(volume, [(2, 2, 2)] * levels, method)`
in this process, tinybrain with `downsample_with_averaging` / `downsample_segmentation(volume,
(2, 2, 2), num_mips=levels)` in a worker process of its own venv (created on first use with
`python -m venv` + `pip install tinybrain numpy`, see bench.py's `peer_venv`). The two alternate
within each repeat; each is warmed up first (numba's compilation, tinybrain's first call) and the
table shows the best and the median of the repeats, in GVx/s of base voxels, and the per-repeat
ratio ours/tinybrain of seconds (below 1: ours is faster). `--ours-order C` gives ours a C-ordered
copy of the volume instead (made before the clock; tinybrain keeps the Fortran order its fast
paths need). Then every one of our levels is
compared with `tensorstore.downsample(base, [2**k] * 3, method)` (`--no-check` skips it).

`--clock cpu` times both with the process's CPU time instead of the wall clock (both run on one
thread, so it is their work; on a machine shared by many jobs it moves far less than wall time).

tinybrain is not exact (its mean floors, its mode is chained and breaks ties otherwise): the
comparison is of speed only; ours must equal tensorstore, which the check asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "bioimage-tasks-bench"
CASES = {  # name: (method, dtype, volume)
    "mean-uint8": ("mean", "uint8", "image"),
    "mean-uint16": ("mean", "uint16", "image"),
    "mode-uint32": ("mode", "uint32", "labels"),
    "mode-uint64": ("mode", "uint64", "labels"),
}
SINGLE_THREAD = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def tinybrain_worker() -> None:
    """Runs in the peer venv: for each JSON request on stdin ({"path", "method", "levels",
    "clock"}) times one tinybrain call on the (cached) volume and answers {"seconds": ...}."""
    import numpy as np
    import tinybrain

    volumes: dict[str, np.ndarray] = {}
    for line in sys.stdin:
        request = json.loads(line)
        volume = volumes.get(request["path"])
        if volume is None:
            volumes.clear()
            volume = volumes[request["path"]] = np.load(request["path"])
        call = (
            tinybrain.downsample_with_averaging
            if request["method"] == "mean"
            else tinybrain.downsample_segmentation
        )
        clock = time.process_time if request.get("clock") == "cpu" else time.perf_counter
        start = clock()
        call(volume, (2, 2, 2), num_mips=request["levels"])
        seconds = clock() - start
        print(
            json.dumps({"seconds": seconds, "fortran": bool(volume.flags.f_contiguous)}), flush=True
        )


def volume_path(data: Path, size: int, case: str, cell: int) -> Path:
    """The case's volume as a Fortran-ordered .npy in `data`, generated once."""
    import numpy as np

    method, dtype, kind = CASES[case]
    name = f"{kind}-{dtype}-{size}" + (f"-cell{cell}" if kind == "labels" else "") + ".npy"
    path = data / name
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        if kind == "image":
            from bioimage_tasks.sample_data import smooth_image

            volume = smooth_image((size,) * 3, seed=0, dtype=np.dtype(dtype))
        else:
            from voronoi import voronoi_labels

            volume = voronoi_labels(size, cell, dtype)
        data.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asfortranarray(volume))
    return path


def time_ours(volume, method: str, levels: int, clock: str = "wall") -> float:
    from bioimage_tasks.kernels.pyramid import pyramid_levels

    timer = time.process_time if clock == "cpu" else time.perf_counter
    start = timer()
    pyramid_levels(volume, [(2, 2, 2)] * levels, method)
    return timer() - start


def check_against_tensorstore(volume, method: str, levels: int) -> str:
    """'exact' if every level of ours equals tensorstore's downsample of the base, else which
    levels differ."""
    import numpy as np
    import tensorstore as ts

    from bioimage_tasks.kernels.pyramid import pyramid_levels

    ours = pyramid_levels(volume, [(2, 2, 2)] * levels, method)
    base = ts.array(np.ascontiguousarray(volume))
    wrong = []
    for k, level in enumerate(ours, start=1):
        expected = ts.downsample(base, [2**k] * 3, method).read().result()
        if level.dtype != expected.dtype or not np.array_equal(level, expected):
            wrong.append(str(k))
    return "exact" if not wrong else "DIFFERS at level " + ",".join(wrong)


def run_case(case: str, size: int, args, worker) -> dict:
    import numpy as np

    method, dtype, _ = CASES[case]
    path = volume_path(args.data, size, case, args.cell)
    volume = np.load(path)
    ours_volume = np.ascontiguousarray(volume) if args.ours_order == "C" else volume
    request = (
        json.dumps(
            {"path": str(path), "method": method, "levels": args.levels, "clock": args.clock}
        )
        + "\n"
    )

    def tinybrain_seconds() -> float:
        worker.stdin.write(request)
        worker.stdin.flush()
        return json.loads(worker.stdout.readline())["seconds"]

    time_ours(ours_volume, method, args.levels)  # warm-up: compilation, caches
    tinybrain_seconds()
    ours, theirs = [], []
    for repeat in range(args.repeats):
        pair = [
            ("ours", lambda: time_ours(ours_volume, method, args.levels, args.clock)),
            ("tinybrain", tinybrain_seconds),
        ]
        for name, run in pair if repeat % 2 == 0 else pair[::-1]:
            (ours if name == "ours" else theirs).append(run())
    check = (
        check_against_tensorstore(ours_volume, method, args.levels) if args.check else "not checked"
    )
    voxels = volume.size / 1e9
    ratios = [a / b for a, b in zip(ours, theirs)]
    return {
        "case": case,
        "size": size,
        "ours_gvxs": (voxels / min(ours), voxels / statistics.median(ours)),
        "tinybrain_gvxs": (voxels / min(theirs), voxels / statistics.median(theirs)),
        "ratio": (statistics.median(ratios), min(ratios), max(ratios)),
        "check": check,
    }


def print_row(row: dict) -> None:
    ours, theirs, ratio = row["ours_gvxs"], row["tinybrain_gvxs"], row["ratio"]
    print(
        f"| {row['case']} | {row['size']}^3 | {ours[0]:.2f} ({ours[1]:.2f}) "
        f"| {theirs[0]:.2f} ({theirs[1]:.2f}) "
        f"| {ratio[0]:.2f} ({ratio[1]:.2f}-{ratio[2]:.2f}) | {row['check']} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument(
        "--cell", type=int, default=32, help="Voronoi cell edge of the labels, voxels"
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--peer-venv", type=Path, default=HERE / ".venv-peers")
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT / "kernel-data")
    parser.add_argument(
        "--ours-order", choices=["F", "C"], default="F", help="memory order of our input"
    )
    parser.add_argument("--no-check", dest="check", action="store_false")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="wall time or CPU time"
    )
    parser.add_argument("--tinybrain-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tinybrain_worker:
        return tinybrain_worker()
    os.environ.update(SINGLE_THREAD)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    from bench_peers import peer_venv

    python, available = peer_venv(args.peer_venv, {"tinybrain": ["tinybrain", "numpy"]})
    if "tinybrain" not in available:
        sys.exit("tinybrain is not available in the peer venv: nothing to compare with")
    worker = subprocess.Popen(
        [python, __file__, "--tinybrain-worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | SINGLE_THREAD,
    )
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, one thread, {args.clock} clock, "
        f"{args.levels} levels of 2x2x2, "
        f"input Fortran-ordered (ours: {args.ours_order}), {args.repeats} repeats; "
        f"labels: Voronoi cells of ~{args.cell}^3 voxels"
    )
    print(
        "| case | size | ours GVx/s best (median) | tinybrain GVx/s best (median) "
        "| ours/tinybrain time, median (min-max) | ours vs tensorstore |"
    )
    print("|---|---|---|---|---|---|")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            for case in args.cases.split(","):
                print_row(run_case(case, size, args, worker))
    finally:
        worker.stdin.close()
        worker.wait()


if __name__ == "__main__":
    main()
