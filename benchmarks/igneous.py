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
import ctypes
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CASES = {  # name: (method, dtype, layer type, encoding)
    "image-raw": ("mean", "uint8", "image", "raw"),
    "labels-raw": ("mode", "uint32", "segmentation", "raw"),
    "labels-cseg": ("mode", "uint32", "segmentation", "compressed_segmentation"),
    "image-gzip": ("mean", "uint8", "image", "raw"),  # sharded, gzip data encoding
    "labels-gzip": ("mode", "uint32", "segmentation", "raw"),  # sharded, gzip data encoding
}
SHARDED = {"image-gzip", "labels-gzip"}  # scale 0: shards of SHARD_CHUNKS^3 chunks, gzip
SHARD_CHUNKS = 4
SAME_DATA = {"labels-cseg": "labels-raw", "image-gzip": "image-raw", "labels-gzip": "labels-raw"}
CONTENDERS = ("ours", "igneous", "tensorstore")
RESOLUTION = 8
CHUNK = 64
SLAB = 64
WARM_UP_SIZE = 128  # each contender runs once on a volume this size before the clock
PROC_READS = [0]  # bytes the measuring process read from /proc itself (not the tree's reads)


# ---------------------------------------------------------------- data


def scale_metadata(size: int, level: int, encoding: str, sharded: bool = False) -> dict:
    """Scale `level` of a `size`^3 volume: 8 nm * 2**level, 64^3 chunks (capped at the size);
    `sharded`: shards of SHARD_CHUNKS^3 chunks (capped at the grid), gzip data encoding."""
    n, r = max(1, size >> level), RESOLUTION << level
    scale = {
        "key": f"{r}_{r}_{r}",
        "size": [n] * 3,
        "resolution": [r] * 3,
        "chunk_size": [min(CHUNK, n)] * 3,
        "voxel_offset": [0, 0, 0],
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [8, 8, 8]
    if sharded:  # a cubic grid: the low 3 * log2(chunks per shard) Morton bits stay in a shard
        bits = max(0, (-(-n // min(CHUNK, n)) - 1).bit_length())
        low = 3 * min(bits, SHARD_CHUNKS.bit_length() - 1)
        scale["sharding"] = {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": min(low, 3),
            "minishard_bits": low - min(low, 3),
            "shard_bits": 3 * bits - low,
            "hash": "identity",
            "minishard_index_encoding": "gzip",
            "data_encoding": "gzip",
        }
    return scale


def precomputed_spec(folder: Path, case: str, size: int, level: int) -> dict:
    _, dtype, kind, encoding = CASES[case]
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(folder) + "/"},
        "multiscale_metadata": {"type": kind, "data_type": dtype, "num_channels": 1},
        "scale_metadata": scale_metadata(size, level, encoding, case in SHARDED),
    }


@functools.lru_cache(maxsize=1)
def coarse_field(n: int):
    """A smooth random n^3 field in [0.05, 0.95]."""
    import numpy as np
    from scipy import ndimage

    field = ndimage.gaussian_filter(
        np.random.default_rng(0).standard_normal((n,) * 3, dtype=np.float32), 2.0
    )
    return (field - field.min()) / float(np.ptp(field)) * 0.9 + 0.05


def image_slab(z0: int, depth: int, size: int):
    """Planes [z0, z0 + depth) of a smooth image: a Gaussian-smoothed coarse field (one value per
    8^3 voxels) interpolated trilinearly, plus noise; the same whatever the slab cut."""
    import numba
    import numpy as np

    step = 8
    coarse = coarse_field(size // step + 2)

    @numba.njit(cache=True)
    def interpolate(out, z0, coarse, step):
        for zz in range(out.shape[0]):
            fz = (z0 + zz) / step
            iz, wz = int(fz), fz - int(fz)
            for y in range(out.shape[1]):
                fy = y / step
                iy, wy = int(fy), fy - int(fy)
                for x in range(out.shape[2]):
                    fx = x / step
                    ix, wx = int(fx), fx - int(fx)
                    value = 0.0
                    for dz, az in ((0, 1 - wz), (1, wz)):
                        for dy, ay in ((0, 1 - wy), (1, wy)):
                            for dx, ax in ((0, 1 - wx), (1, wx)):
                                value += az * ay * ax * coarse[iz + dz, iy + dy, ix + dx]
                    out[zz, y, x] += value

    values = 0.02 * np.random.default_rng(1 + z0).standard_normal((depth, size, size), np.float32)
    interpolate(values, z0, coarse, step)
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def labels_slab(z0: int, depth: int, size: int, cell: int = 32):
    """Planes [z0, z0 + depth) of Voronoi labels (benchmarks/voronoi.py): one seed jittered in
    each `cell`^3 grid cell, each voxel labelled with its nearest seed's (random, scattered
    uint32) id."""
    from voronoi import voronoi_slab

    return voronoi_slab(z0, depth, size, cell, "uint32", id_count=2**32 - 2)


def base_volume(data: Path, case: str, size: int) -> Path:
    """The case's precomputed volume holding scale 0 only, written once (slab by slab)."""
    import tensorstore as ts

    folder = data / f"{case}-{size}" / "base"
    if (folder / "info").exists():
        return folder
    partial = folder.with_name("base.partial")  # renamed once complete
    shutil.rmtree(partial, ignore_errors=True)
    print(f"writing {folder} ...", flush=True)
    store = ts.open(precomputed_spec(partial, case, size, 0), create=True).result()
    zyx = store[ts.d["channel"][0]].T
    make = image_slab if CASES[case][2] == "image" else labels_slab
    raw = data / f"{SAME_DATA.get(case)}-{size}" / "base"
    if case in SAME_DATA and (raw / "info").exists():  # the same voxels, not made again
        same_zyx = ts.open(precomputed_spec(raw, SAME_DATA[case], size, 0)).result()

        def make(z0: int, depth: int, size: int):
            return same_zyx[ts.d["channel"][0]].T[z0 : z0 + depth].read().result()

    for z0 in range(0, size, SLAB):
        zyx[z0 : z0 + SLAB].write(make(z0, min(SLAB, size - z0), size)).result()
    partial.rename(folder)
    return folder


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


# ---------------------------------------------------------------- measuring a process tree


def descendants(pid: int) -> list[int]:
    """`pid`'s live descendants (through /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    text = f.read()
                PROC_READS[0] += len(text)
                children = [int(c) for c in text.split()]
                found += children
                todo += children
        except OSError:
            continue
    return found


def pss_bytes(pid: int) -> tuple[int, int]:
    """(PSS bytes of `pid`, bytes read to learn it)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            text = f.read()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        if line.startswith(b"Pss:"):
            return int(line.split()[1]) * 1024, len(text)
    return 0, len(text)


def io_counts() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}


def measure_main(command: list[str]) -> None:
    """Run `command` as a child subreaper: its whole tree is reaped here, so /proc/self/io then
    holds every byte the tree read; the tree's PSS is summed every 50 ms. Prints JSON."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    before, times = io_counts(), os.times()
    own_reads, peak = 0, 0
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal own_reads, peak
        while not done.is_set():
            total = 0
            for pid in [child.pid, *descendants(child.pid)]:
                pss, read = pss_bytes(pid)
                total, own_reads = total + pss, own_reads + read
            peak = max(peak, total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = child.communicate()[0]
    while True:  # orphans (pool workers) are ours to reap
        try:
            os.wait()
        except ChildProcessError:
            break
    done.set()
    sampler.join()
    after, spent = io_counts(), os.times()
    result = json.loads(out.strip().splitlines()[-1]) if child.returncode == 0 else {}
    result |= {
        "returncode": child.returncode,
        "peak_pss": peak,
        "rchar": after["rchar"] - before["rchar"] - own_reads - PROC_READS[0] - len(out),
        "read_bytes": after["read_bytes"] - before["read_bytes"],
        "cpu": spent.children_user
        + spent.children_system
        - times.children_user
        - times.children_system,
    }
    print(json.dumps(result), flush=True)


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
