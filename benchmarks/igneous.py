"""Adding mips to a neuroglancer precomputed volume in place: ours against igneous and tensorstore,
one run, same data (issue 22's benchmark).

    python benchmarks/igneous.py [--size 1024] [--mips 3] [--repeats 3] [--threads 2]
                                 [--cases image-raw,labels-raw,labels-cseg,image-gzip,labels-gzip]
                                 [--contenders ours,igneous,tensorstore]
                                 [--data /work/bench-data/igneous] [--peer-venv DIR] [--keep]

Data: a `--size`^3 smooth uint8 image (mean) and uint32 Voronoi labels (cells of ~32^3 voxels,
mode), each written once as scale 0 ("8_8_8", 64^3 chunks) of a precomputed volume, raw, or
compressed_segmentation for labels (what igneous writes for segmentation), or sharded with gzip
data encoding (`*-gzip`: shards of 4^3 chunks; the mips are sharded gzip too). No unsharded gzip
case: cloud-volume writes those chunks as `<chunk>.gz` files on disk, which tensorstore's driver
does not read (we refuse such a volume, naming the problem).
Before every run the base folder is copied afresh, so each contender starts from the same files
(in the page cache for all). Contenders, each in a process of its own, `--threads` workers:
- ours: `bioimage_tasks.pyramid("precomputed://F", "precomputed://F", scale_factors=[2] * mips,
  method, chunks=(64,) * 3, num_workers=threads)`, the missing scales added in place;
- igneous (`igneous-pipeline` 4.37 in the peer venv, created on first use):
  `create_downsampling_tasks("file://F", mip=0, num_mips=mips, factor=(2, 2, 2))` run by
  `LocalTaskQueue(parallel=threads)`; for the sharded cases its sharded task,
  `create_image_shard_downsample_tasks("file://F", mip=0, num_mips=mips, factor=(2, 2, 2))`
  (its default memory target of 3.5 GB: one shard per mip, so one task for the volume);
- tensorstore: each mip k written from `ts.downsample(base, 2**k, method)` (from the base, so
  exact; sharded gzip like the base in the sharded cases), `data_copy_concurrency` and
  `file_io_concurrency` limited to `threads`.
Repeats rotate the contenders' order; the tables give medians. Per run: wall time of the work
(imports and start-up excluded), CPU seconds of the whole tree (user + system, start-up
included: the load here swings, CPU time less), peak memory of the process tree (the sum of
PSS over every process, sampled every 50 ms: igneous's workers share pages, RSS would count
them twice), bytes read (`rchar` of /proc/<pid>/io: every byte read(2) returned, from files or
pipes, by the tree, reaped children included; `read_bytes`, what came from the block device,
is ~0 with a warm page cache and is shown too). Exactness: every mip of the first run of each
contender is compared with tensorstore's downsample of the base (the tensorstore contender's
output, itself checked at size <= 256 against `ts.downsample` of the whole base in memory):
% voxels differing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from igneous_data import CASES, CHUNK, SHARDED, SLAB, base_volume, precomputed_spec
from measure_tree import measure_main

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONTENDERS = ("ours", "igneous", "tensorstore")
WARM_UP_SIZE = 128  # each contender runs once on a volume this size before the clock


# ---------------------------------------------------------------- contenders (own process)


def run_ours(folder: str, method: str, mips: int, threads: int, case: str) -> None:
    from bioimage_tasks import pyramid

    url = f"precomputed://{folder}"
    pyramid(
        url,
        url,
        scale_factors=[2] * mips,
        method=method,
        chunks=(CHUNK,) * 3,
        labels=CASES[case][2] == "segmentation",
        num_workers=threads,
    )


def run_igneous(folder: str, method: str, mips: int, threads: int, case: str) -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # not this file
    import igneous.task_creation as tc
    from taskqueue import LocalTaskQueue

    if case in SHARDED:  # its task for sharded volumes: sharded mips (gzip data encoding)
        tasks = tc.create_image_shard_downsample_tasks(
            "file://" + folder, mip=0, num_mips=mips, factor=(2, 2, 2)
        )
    else:
        tasks = tc.create_downsampling_tasks(
            "file://" + folder, mip=0, num_mips=mips, factor=(2, 2, 2), compress=False
        )
    queue = LocalTaskQueue(parallel=threads, progress=False)
    queue.insert(tasks)
    queue.execute(progress=False)


def run_tensorstore(folder: str, method: str, mips: int, threads: int, case: str) -> None:
    import tensorstore as ts

    context = ts.Context(
        {
            "data_copy_concurrency": {"limit": threads},
            "file_io_concurrency": {"limit": threads},
            "file_io_sync": False,
        }
    )
    size = json.loads(Path(folder, "info").read_text())["scales"][0]["size"][0]
    spec = precomputed_spec(Path(folder), case, size, 0)
    base = ts.open(spec, context=context).result()
    for level in range(1, mips + 1):
        out = ts.open(
            precomputed_spec(Path(folder), case, size, level), create=True, context=context
        ).result()
        out.write(ts.downsample(base, [2**level] * 3 + [1], method)).result()


def contender_main(args) -> None:
    """Run one contender on `args.folder`; print the work's wall seconds as JSON."""
    method = CASES[args.case][0]
    run = {"ours": run_ours, "igneous": run_igneous, "tensorstore": run_tensorstore}[args.run]
    start = time.perf_counter()
    run(str(args.folder), method, args.mips, args.threads, args.case)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


# ---------------------------------------------------------------- the benchmark


def differing(folder: Path, reference: Path, case: str, size: int, level: int) -> float | None:
    """% of voxels of mip `level` in `folder` that differ from `reference`'s (slab by slab);
    None where the mip is missing (igneous makes fewer mips than asked on small volumes)."""
    import numpy as np
    import tensorstore as ts

    def mip(where: Path):
        spec = precomputed_spec(where, case, size, level)
        # by resolution: cloud-volume names igneous's scales "16.0_16.0_16.0"
        spec["scale_metadata"] = {"resolution": spec["scale_metadata"]["resolution"]}
        spec.pop("multiscale_metadata")
        return ts.open(spec).result()[ts.d["channel"][0]].T

    try:
        ours = mip(folder)
    except ValueError as error:
        print(f"  !! {folder.name} has no mip {level}: {str(error)[:100]}", flush=True)
        return None
    theirs, wrong, n = mip(reference), 0, ours.shape[0]
    for z0 in range(0, n, SLAB):
        part = slice(z0, min(z0 + SLAB, n))
        a, b = ours[part].read().result(), theirs[part].read().result()
        wrong += int(np.count_nonzero(a != b))
    return 100.0 * wrong / float(np.prod(ours.shape))


def check_reference(reference: Path, base: Path, case: str, size: int, mips: int) -> None:
    """At small sizes, the reference's mips against `ts.downsample` of the whole base in memory."""
    import numpy as np
    import tensorstore as ts

    spec = precomputed_spec(base, case, size, 0)
    spec.pop("multiscale_metadata")
    whole = ts.array(ts.open(spec).result().read().result())
    for level in range(1, mips + 1):
        spec = precomputed_spec(reference, case, size, level)
        spec.pop("multiscale_metadata")
        written = ts.open(spec).result().read().result()
        expected = ts.downsample(whole, [2**level] * 3 + [1], CASES[case][0]).read().result()
        assert np.array_equal(written, expected), f"tensorstore's mip {level} is not its downsample"


def run_once(args, contender: str, case: str, base: Path, work: Path) -> dict:
    """A fresh copy of the base, then one measured run of `contender` on it."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work)
    python = str(args.peer_python) if contender == "igneous" else sys.executable
    command = [python, __file__, "--run", contender, "--case", case, "--folder", str(work)]
    command += ["--mips", str(args.mips), "--threads", str(args.threads)]
    measure = [sys.executable, __file__, "--measure", *command]
    env = os.environ | {"PYTHONPATH": str(REPO)} if contender == "ours" else os.environ
    done = subprocess.run(measure, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"the measuring process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["returncode"] != 0:
        sys.exit(f"{contender} failed on {case}:\n{done.stderr[-3000:]}")
    return result


def run_case(args, case: str) -> None:
    root = args.data / f"{case}-{args.size}"
    base = base_volume(args.data, case, args.size)
    reference = root / "reference"
    if not (reference / "info").exists():
        shutil.copytree(base, reference)
        run_tensorstore(str(reference), CASES[case][0], args.mips, args.threads, case)
        if args.size <= 256:
            check_reference(reference, base, case, args.size, args.mips)
    warm = base_volume(args.data, case, WARM_UP_SIZE)  # numba's caches, the .so files
    for contender in args.contenders:
        run_once(args, contender, case, warm, root / "run-warm-up")
    shutil.rmtree(root / "run-warm-up", ignore_errors=True)
    if warm != base:
        shutil.rmtree(warm.parent, ignore_errors=True)
    results: dict[str, list[dict]] = {c: [] for c in args.contenders}
    exact: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        shift = repeat % len(args.contenders)
        for contender in args.contenders[shift:] + args.contenders[:shift]:
            work = root / f"run-{contender}"
            result = run_once(args, contender, case, base, work)
            results[contender].append(result)
            print(f"  {case} {contender} #{repeat + 1}: {result}", flush=True)
            if contender not in exact:
                exact[contender] = [
                    differing(work, reference, case, args.size, level)
                    for level in range(1, args.mips + 1)
                ]
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    print_case(args, case, results, exact)


def print_case(args, case: str, results: dict, exact: dict) -> None:
    median = {
        c: {
            k: statistics.median(r.get(k, 0) for r in runs)
            for k in ("seconds", "cpu", "peak_pss", "rchar")
        }
        for c, runs in results.items()
    }
    print(
        f"\n{case} ({CASES[case][0]}), {args.size}^3, {args.mips} mips, {args.threads} workers, "
        f"{args.repeats} repeats (medians)\n"
        "| contender | wall s (min-max) | CPU s | peak PSS MB | rchar MB | read_bytes MB "
        "| % voxels != tensorstore, per mip |\n|---|---|---|---|---|---|---|"
    )
    for contender, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        m = median[contender]
        print(
            f"| {contender} | {m['seconds']:.2f} ({min(seconds):.2f}-{max(seconds):.2f}) "
            f"| {m['cpu']:.1f} | {m['peak_pss'] / 1e6:.0f} | {m['rchar'] / 1e6:.0f} "
            f"| {statistics.median(r['read_bytes'] for r in runs) / 1e6:.0f} "
            f"| {', '.join('missing' if p is None else f'{p:.3g}' for p in exact[contender])} |"
        )
    if "ours" in median:
        for peer in (c for c in median if c != "ours"):
            ratio = {k: median["ours"][k] / max(median[peer][k], 1) for k in median["ours"]}
            print(
                f"| ours/{peer} | {ratio['seconds']:.2f}x | {ratio['cpu']:.2f}x "
                f"| {ratio['peak_pss']:.2f}x | {ratio['rchar']:.2f}x | | |"
            )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--mips", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    default_data = (
        "/work/bench-data" if os.path.isdir("/work/bench-data") else tempfile.gettempdir()
    )
    parser.add_argument("--data", type=Path, default=Path(default_data) / "igneous-bench")
    parser.add_argument("--peer-venv", type=Path, default=HERE / ".venv-peers")
    parser.add_argument("--keep", action="store_true", help="keep the data and last outputs")
    parser.add_argument("--run", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return contender_main(args)
    args.contenders = args.contenders.split(",")
    if "igneous" in args.contenders:
        sys.path.insert(0, str(HERE))
        from bench_peers import peer_venv

        python, available = peer_venv(
            args.peer_venv, {"igneous": ["igneous-pipeline==4.37.*", "numpy"]}
        )
        if "igneous" not in available:
            sys.exit("igneous is not available in the peer venv: nothing to compare with")
        args.peer_python = python
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, data in {args.data}", flush=True)
    try:
        for case in args.cases.split(","):
            run_case(args, case)
            if not args.keep:
                shutil.rmtree(args.data / f"{case}-{args.size}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure_main(sys.argv[2:])
    else:
        main()
