"""The floor of converting many small stacks: what a pyramid per file costs with nothing but the
work itself, against `bioimage_tasks.convert` of the same files and of their concatenation.

    python benchmarks/many_floor.py [--data /tmp/stacks23b] [--repeats 3]

The floor converts every stack of `czi.py many`'s folder on 2 threads: tifffile reads it, our
mean kernel makes 3 levels, tensorstore writes each level as a zarr v3 array with our chunks and
codec, and one group zarr.json. It keeps no records, stamps, leases or multiscales metadata, so
it cannot resume, verify or refuse a concurrent writer: the gap between it and ours is what that
bookkeeping and the per-file checks cost. Each run is a fresh process into a fresh folder
(outputs deleted after all runs, as czi_many.py does); ratios are paired per repeat.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import glob, json, os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
case, source, out = sys.argv[1:4]

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

def floor(path, ts, tifffile, pyramid_levels, context):
    name = os.path.basename(path).split(".")[0]
    data = tifffile.imread(path)
    levels = [data, *pyramid_levels(data, [(2, 2, 2)] * 3, "mean")]
    writes = []
    for index, level in enumerate(levels):
        chunks = [32, 64, 128] if index == 0 else list(level.shape)
        spec = {"driver": "zarr3", "kvstore": {"driver": "file",
                "path": f"{out}/{name}.ome.zarr/s{index}"},
                "metadata": {"shape": list(level.shape), "data_type": str(level.dtype),
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 0}}]}}
        writes.append(ts.open(spec, create=True, context=context).result().write(level))
    for write in writes:
        write.result()
    with open(f"{out}/{name}.ome.zarr/zarr.json", "w") as group:
        json.dump({"zarr_format": 3, "node_type": "group", "attributes": {}}, group)

started, spent = time.perf_counter(), cpu()
if case == "floor":
    import tensorstore as ts, tifffile
    from bioimage_tasks.kernels.pyramid import pyramid_levels
    os.makedirs(out)
    context = ts.Context({"file_io_sync": False})
    files = sorted(glob.glob(source))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: floor(f, ts, tifffile, pyramid_levels, context), files))
else:
    import bioimage_tasks
    assert bioimage_tasks.convert(source, out, levels=3, num_workers=2).ok
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": cpu() - spent}))
"""


def run(case: str, source: str, output: Path) -> dict[str, float]:
    """One timed run of `case` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, source, str(output)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/stacks23b"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = {
        "floor": str(args.data / "stacks-200x32x256" / "*.ome.tif"),
        "ours files": str(args.data / "stacks-200x32x256" / "*.ome.tif"),
        "ours concatenated": str(args.data / "concatenated-6400x256.ome.tif"),
    }
    if not Path(sources["ours concatenated"]).exists():
        sys.exit(f"no data in {args.data}: run `python benchmarks/czi.py many --data {args.data}`")
    work = args.data / "runs-floor"
    shutil.rmtree(work, ignore_errors=True)
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in sources}
    for repeat in range(args.repeats):
        order = list(sources)[repeat % 3 :] + list(sources)[: repeat % 3]
        for case in order:
            result = run(case, sources[case], work / f"{repeat}-{case.replace(' ', '-')}")
            runs[case].append(result)
            print(f"  #{repeat + 1} {case}: {result['seconds']:.2f} s, CPU {result['cpu']:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    whole = runs["ours concatenated"]
    for case in ("floor", "ours files"):
        for key in ("seconds", "cpu"):
            ratios = [a[key] / b[key] for a, b in zip(runs[case], whole)]
            print(f"{case} / ours concatenated, {key}: median {statistics.median(ratios):.2f}")
    time.sleep(35)  # the deletion above slows the next run's file creation (czi_many.py)


if __name__ == "__main__":
    main()
