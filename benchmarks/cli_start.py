"""A small job from the shell: `bioimage-tasks pyramid stack.ome.tif out.ome.zarr --levels 3` on a
64x256x256 uint16 OME-TIFF with no Prefect API configured (the plain engine), against a bare
`python -c "import numpy, zarr, tensorstore, tifffile"`, each in a fresh process, alternating,
median of `--repeats`. Also `--prefect` (a temporary Prefect server) for comparison.

    python benchmarks/cli_start.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BARE = [sys.executable, "-c", "import numpy, zarr, tensorstore, tifffile"]


def write_stack(path: str) -> None:
    import numpy as np
    import tifffile

    stack = np.random.default_rng(0).integers(0, 4000, (64, 256, 256), dtype=np.uint16)
    tifffile.imwrite(path, stack, ome=True, tile=(128, 128), metadata={"axes": "ZYX"})


def seconds(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--prefect", action="store_true", help="also time --prefect (temporary server)"
    )
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="cli-start-")
    stack = os.path.join(root, "stack.ome.tif")
    write_stack(stack)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": os.path.join(root, "prefect-home")
    }
    cli = [sys.executable, "-m", "bioimage_tasks.cli", "pyramid", stack]
    cases = {
        "bare import": lambda i: BARE,
        "CLI pyramid, plain engine": lambda i: [
            *cli,
            os.path.join(root, f"plain{i}.ome.zarr"),
            "--levels",
            "3",
        ],
    }
    if args.prefect:
        cases["CLI pyramid, --prefect"] = lambda i: [
            *cli,
            os.path.join(root, f"flow{i}.ome.zarr"),
            "--levels",
            "3",
            "--prefect",
        ]
    times: dict[str, list[float]] = {name: [] for name in cases}
    seconds(BARE, env)  # warm the page cache
    for repeat in range(args.repeats):
        for name, command in cases.items():
            times[name].append(seconds(command(repeat), env))
    bare = statistics.median(times["bare import"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:28} median {median:6.2f} s (min {min(values):.2f}, max {max(values):.2f})  "
            f"{median / bare:5.1f}x the bare import"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
