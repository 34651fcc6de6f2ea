"""`python benchmarks/czi.py many`: FILES small OME-TIFF stacks against their concatenation,
each converted by `bioimage_tasks.convert` in a fresh process (see czi.py's docstring)."""

from __future__ import annotations

import argparse
import glob
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import bench_runs
from bench_results import median_range, verdict
from czi_contenders import LEVELS, OURS

SCRIPT = Path(__file__).resolve().with_name("czi.py")  # its --run-one runs a contender
MANY_TARGET = 1.5  # files / concatenated


def paired(ours: list[dict], theirs: list[dict], key: str) -> list[float]:
    """theirs / ours of `key` per repeat (the runs of one repeat ran back to back)."""
    return [b[key] / a[key] for a, b in zip(ours, theirs) if key in a and key in b]


def make_stacks(data: Path, files: int, planes: int, side: int) -> tuple[Path, Path]:
    """FILES OME-TIFF stacks and their concatenation (one file); kept for later runs."""
    import numpy as np
    import tifffile

    folder = data / f"stacks-{files}x{planes}x{side}"
    whole = data / f"concatenated-{files * planes}x{side}.ome.tif"
    if whole.exists():
        return folder, whole
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:side, :side].astype(np.float32)
    with tifffile.TiffWriter(whole, bigtiff=True, ome=True) as concatenated:
        stacks = []
        for i in range(files):
            smooth = (np.sin(x / 17.0 + i) + np.cos(y / 11.0)) * 3000 + 10000
            stack = (smooth + rng.integers(0, 64, (planes, side, side))).astype(np.uint16)
            tifffile.imwrite(folder / f"stack{i:04d}.ome.tif", stack, metadata={"axes": "ZYX"})
            stacks.append(stack)
        concatenated.write(np.concatenate(stacks), metadata={"axes": "ZYX"})
    return folder, whole


INODES_SETTLE = 35.0  # s: unjournaled ext4 skips inodes freed in the last ~30 s


def many_schedule(repeats: int, deletion: str) -> list[tuple[int, str, str]]:
    """(repeat, variant, case) of every timed run: cases alternate per repeat; with `both` each
    repeat runs the fresh-folder variant, then the delete-before one."""
    variants = ("fresh", "before") if deletion == "both" else (deletion,)
    cases = ("files", "concatenated")
    schedule = []
    for repeat in range(repeats):
        for variant in variants:
            order = cases[repeat % 2 :] + cases[: repeat % 2]
            schedule += [(repeat, variant, name) for name in order]
    return schedule


def wait_after_deletion(deleted_at: float) -> None:
    """Sleep until the last mass deletion is INODES_SETTLE old: the real job has none before."""
    time.sleep(max(0.0, deleted_at + INODES_SETTLE - time.monotonic()))


def creation_cost(folder: Path, count: int = 300) -> float:
    """Microseconds per new folder (nested pairs) made now in `folder`, kept until the outputs are
    deleted: ext4 here makes them 5-8x dearer for minutes after a mass deletion (benchmarks/
    README), and a files run makes ~36 folders a stack, the concatenation ~10."""
    started = time.perf_counter()
    for index in range(count):
        (folder / f"probe{index:04d}" / "inner").mkdir(parents=True)
    return (time.perf_counter() - started) / (2 * count) * 1e6


def fresh_work(work: Path) -> tuple[float, float]:
    """Delete an interrupted invocation's leftovers in `work`, wait until that deletion is
    INODES_SETTLE old, and probe folder creation: (when the last deletion was, us a folder)."""
    deleted_at = -INODES_SETTLE
    if work.exists():
        shutil.rmtree(work, ignore_errors=True)
        deleted_at = time.monotonic()
    wait_after_deletion(deleted_at)
    probe = creation_cost(work / "probe-before")
    print(f"folder creation now: {probe:.0f} us a folder (quiet: 10-25 us)", flush=True)
    return deleted_at, probe


def many_run(
    args: argparse.Namespace, source: str, output: Path, contender: str = OURS
) -> dict[str, Any]:
    """One timed run of `contender` (our convert) from `source` into `output`, in a fresh
    process, the page cache holding the inputs and nothing else where it can be dropped."""
    inputs = [Path(p) for p in sorted(glob.glob(source))]
    dropped = bench_runs.fresh_page_cache(inputs)
    request = {"contender": contender, "input": source, "output": str(output)}
    result, rss = bench_runs.run_child(
        sys.executable, args.env, request, args.timeout, SCRIPT, args.max_rss * 1024
    )
    return result | {"rss_mb": rss, "page_cache_dropped": dropped}


def many_ratios(runs: dict[str, list], variant: str) -> dict[str, list[float]]:
    """Paired files / concatenated ratios (wall, CPU) of one variant's runs."""
    files = [r for r in runs["files"] if r["variant"] == variant]
    whole = [r for r in runs["concatenated"] if r["variant"] == variant]
    return {"wall": paired(whole, files, "seconds"), "cpu": paired(whole, files, "cpu")}


def many_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Timed runs each into a fresh folder (`fresh`), or right after deleting the previous run's
    output (`before`, the old way: ~13,000 inodes freed make ext4's next allocations slow), or
    both interleaved; outputs deleted after all repeats, then INODES_SETTLE waited (so that a
    next invocation's first run does not follow the deletion), old ones before the first run."""
    folder, whole = make_stacks(args.data, args.files, args.planes, args.side)
    cases = {"files": str(folder / "*.ome.tif"), "concatenated": str(whole)}
    runs: dict[str, list] = {name: [] for name in cases}
    work = args.data / "runs-many"
    print(f"\n{args.files} stacks of {args.planes}x{args.side}^2 uint16 vs {whole}", flush=True)
    deleted_at, probe = fresh_work(work)
    previous = None
    for index, (repeat, variant, name) in enumerate(many_schedule(args.repeats, args.deletion)):
        output = work / f"run{index:02d}-{variant}-{name}"
        if variant == "before" and previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        else:
            wait_after_deletion(deleted_at)
        result = many_run(args, cases[name], output) | {"variant": variant}
        if variant == "before":
            deleted_at = time.monotonic()
        previous = output
        runs[name].append(result)
        print(
            f"  #{repeat + 1} {variant} {name}: {result['seconds']:.2f} s, "
            f"CPU {result['cpu']:.2f} s, peak RSS {result['rss_mb']:.0f} MB",
            flush=True,
        )
    after = creation_cost(work / "probe-after")
    print(f"folder creation after the runs: {after:.0f} us a folder", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"outputs deleted; waiting {INODES_SETTLE:.0f} s so that no next run follows it")
    wait_after_deletion(time.monotonic())
    summary: dict[str, Any] = {
        "runs": runs,
        "deletion": args.deletion,
        "folder_creation_us": {"before": probe, "after": after},
    }
    dropped = all(r["page_cache_dropped"] for case in runs.values() for r in case)
    print(f"page cache dropped before every run: {'yes' if dropped else 'no (not root)'}")
    for variant in dict.fromkeys(v for _, v, _ in many_schedule(1, args.deletion)):
        ratios = many_ratios(runs, variant)
        summary[variant] = ratios
        print(
            f"\n== {args.files} files / concatenated, {LEVELS} levels, {variant}: wall "
            f"{median_range(ratios['wall'])} (per repeat "
            f"{', '.join(f'{r:.2f}' for r in ratios['wall'])}), CPU {median_range(ratios['cpu'])}"
        )
        median = statistics.median(ratios["wall"])
        print(f"{verdict(median <= MANY_TARGET)} files / concatenated <= {MANY_TARGET} (wall)")
    return summary
