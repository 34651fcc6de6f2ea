"""The pyramid benchmark's child-process side: contenders, the existing-s0 probe, the exactness
check and the large-factor downsample runs. Each runs in a fresh process started by
`pyramid.py`; imports are local, so the peer venv (no bioimage_tasks, no tensorstore) can load
this module too."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_runs import SETTLE_SECONDS, peak_rss_mb, settle_disk
from bench_volumes import CHUNK
from downsample_contenders import WORKERS, ts_create, ts_spec

LEVELS = 5  # s1..s5, factor 2 each
SAMPLE_CHUNKS = 16  # chunks compared on levels too large to compare whole
WHOLE_UP_TO = 256**3  # levels with at most this many voxels are compared whole


def level_paths(group: str, levels: int = LEVELS) -> list[str]:
    """The arrays s0..sN of a pyramid group: from its OME-Zarr multiscales metadata if it has
    one (zarr v3 "ome" or v2 .zattrs), else `group/s0..sN`."""
    root = Path(group)
    for meta, pick in (
        (root / "zarr.json", lambda m: m.get("attributes", {}).get("ome", {})),
        (root / ".zattrs", lambda m: m),
    ):
        if meta.exists() and (multiscales := pick(json.loads(meta.read_text())).get("multiscales")):
            return [f"{group}/{d['path']}" for d in multiscales[0]["datasets"]]
    return [f"{group}/s{level}" for level in range(levels + 1)]


def tree_rchar(pid: int | None = None) -> int:
    """`rchar` of /proc/PID/io summed over the process and its live descendants: bytes returned
    by read()/pread()/readv() calls on any file (page-cache hits included, recv() on sockets
    not), including children that already exited and were reaped (the kernel folds them into
    the parent)."""
    pid = pid or os.getpid()
    try:
        with open(f"/proc/{pid}/io") as io:
            total = next(int(line.split()[1]) for line in io if line.startswith("rchar:"))
        children = [
            int(c)
            for task in os.listdir(f"/proc/{pid}/task")
            for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        ]
    except (OSError, StopIteration):
        return 0
    return total + sum(tree_rchar(child) for child in children)


# --------------------------------------------------------------------------------------------
# Contenders: run(method, input, output_group) does the work (may return the seconds to time);
# prepare(method, input, output_group) runs before the clock


@dataclass(frozen=True)
class Contender:
    name: str
    run: Callable[[str, str, str], float | None]
    imports: tuple[str, ...] = ()
    prepare: Callable[[str, str, str], None] = lambda method, source, group: None
    peer: str | None = None  # the peer-venv module it needs
    existing_s0: bool = (
        False  # the output group already holds s0 (a copy of the input) when it starts
    )


def warm_up_prefect(method: str, source: str, group: str) -> None:
    """One tiny untimed pyramid call (a process's first flow call pays Prefect's client set-up),
    then SETTLE_SECONDS for the server to store its events (see
    downsample_contenders.warm_up_prefect)."""
    import numpy as np

    from flows import pyramid_flow

    pyramid_flow(
        np.zeros((16, 16, 16), np.uint8), f"{group}-warm-up.zarr", scale_factors=[2], method=method
    )
    shutil.rmtree(f"{group}-warm-up.zarr", ignore_errors=True)
    time.sleep(SETTLE_SECONDS)


def copy_s0(source: str, group: str) -> None:
    """`group` as a zarr v3 group whose s0 is a file copy of the input array."""
    import zarr

    zarr.open_group(group, mode="w", zarr_format=3)
    shutil.copytree(source, f"{group}/s0")


def prepare_ours_existing(method: str, source: str, group: str) -> None:
    copy_s0(source, group)
    warm_up_prefect(method, source, group)


def run_ours(method: str, source: str, group: str) -> None:
    from flows import pyramid_flow

    pyramid_flow(
        source,
        group,
        scale_factors=[2] * LEVELS,
        method=method,
        chunks=(CHUNK,) * 3,
        num_workers=WORKERS,
    )


def run_ours_existing(method: str, source: str, group: str) -> None:
    run_ours(method, f"{group}/s0", group)


def ts_pyramid(source: str, group: str, *, chained: bool, write_s0: bool, method: str) -> None:
    """tensorstore: s0 a copy of the input (unless it exists), then s1..s5, each downsampled
    from the level written before (chained) or from s0 by the cumulative factor."""
    import tensorstore as ts

    src = ts.open(ts_spec(source), read=True).result()
    s0 = (
        ts_create(f"{group}/s0", src, src.shape, src.dtype)
        if write_s0
        else ts.open(ts_spec(f"{group}/s0")).result()
    )
    if write_s0:
        s0.write(src).result()
    previous = s0
    for level in range(1, LEVELS + 1):
        view = ts.downsample(previous if chained else s0, [2 if chained else 2**level] * 3, method)
        dst = ts_create(f"{group}/s{level}", src, tuple(view.shape), src.dtype)
        dst.write(view.translate_to[0]).result()
        previous = dst


def run_omezarr(method: str, source: str, group: str) -> None:
    """ome-zarr-py `write_image` (NGFF 0.5): local_mean for the image; for labels nearest
    (skimage resize order 0, its only label-safe method: it has no mode). Each level from the
    one before; dask on 2 threads. Integer scale factors would leave z alone, so pass dicts."""
    import dask
    import dask.array as da
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    container, _, key = source.rpartition(".zarr/")
    image = da.from_zarr(zarr.open_array(container + ".zarr", path=key, mode="r"))
    factors = [{axis: 2**level for axis in "zyx"} for level in range(1, LEVELS + 1)]
    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        write_image(
            image,
            zarr.open_group(group, mode="w", zarr_format=3),
            scale_factors=factors,
            axes="zyx",
            method=Methods.LOCAL_MEAN if method == "mean" else Methods.NEAREST,
            storage_options={"chunks": (CHUNK,) * 3},
        )


def run_ngff_zarr(method: str, source: str, group: str) -> None:
    """ngff-zarr `to_multiscales` + `to_ngff_zarr` (NGFF 0.5): DASK_BIN_SHRINK (window mean,
    rounded half up) for the image, DASK_IMAGE_MODE (window mode, lowest on a tie) for labels;
    each level from the one before; dask on 2 threads."""
    import dask
    import dask.array as da
    import zarr
    from ngff_zarr import Methods, to_multiscales, to_ngff_image, to_ngff_zarr

    container, _, key = source.rpartition(".zarr/")
    image = to_ngff_image(
        da.from_zarr(zarr.open_array(container + ".zarr", path=key, mode="r")), dims=("z", "y", "x")
    )
    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        multiscales = to_multiscales(
            image,
            scale_factors=[2**level for level in range(1, LEVELS + 1)],
            chunks=CHUNK,
            method=Methods.DASK_BIN_SHRINK if method == "mean" else Methods.DASK_IMAGE_MODE,
        )
        to_ngff_zarr(group, multiscales, version="0.5")


def run_io_floor(method: str, source: str, group: str) -> float:
    """Read+decode every input chunk once, then encode+write s0 and arrays of the levels'
    shapes (strided picks of the input, prepared untimed); returns only the I/O seconds."""
    import tensorstore as ts

    src = ts.open(ts_spec(source), read=True).result()
    started = time.perf_counter()
    data = src.read().result()
    seconds = time.perf_counter() - started
    levels = [data] + [
        data[(slice(None, None, 2**level),) * 3].copy() for level in range(1, LEVELS + 1)
    ]
    arrays = [
        ts_create(f"{group}/s{level}", src, values.shape, src.dtype)
        for level, values in enumerate(levels)
    ]
    started = time.perf_counter()
    for array, values in zip(arrays, levels):
        array.write(values).result()
    return seconds + time.perf_counter() - started


OURS = "ours pyramid_flow (threads x2)"
OURS_EXISTING = "ours, existing s0"
TS_BASE = "tensorstore from base (exact)"
IO_FLOOR = "I/O floor (read base + write all)"
OUR_MODULES = ("flows", "numpy", "zarr", "tensorstore")
CONTENDERS = {
    c.name: c
    for c in (
        Contender(OURS, run_ours, OUR_MODULES, warm_up_prefect),
        Contender(
            "tensorstore chained",
            lambda m, s, g: ts_pyramid(s, g, chained=True, write_s0=True, method=m),
            ("tensorstore",),
        ),
        Contender(
            TS_BASE,
            lambda m, s, g: ts_pyramid(s, g, chained=False, write_s0=True, method=m),
            ("tensorstore",),
        ),
        Contender(
            "ome-zarr-py write_image",
            run_omezarr,
            ("dask.array", "zarr", "ome_zarr.writer"),
            peer="ome_zarr",
        ),
        Contender(
            "ngff-zarr", run_ngff_zarr, ("dask.array", "zarr", "ngff_zarr"), peer="ngff_zarr"
        ),
        Contender(IO_FLOOR, run_io_floor, ("numpy", "tensorstore")),
        Contender(
            OURS_EXISTING, run_ours_existing, OUR_MODULES, prepare_ours_existing, existing_s0=True
        ),
        Contender(
            "tensorstore chained, existing s0",
            lambda m, s, g: ts_pyramid(s, g, chained=True, write_s0=False, method=m),
            ("tensorstore",),
            lambda method, source, group: copy_s0(source, group),
            existing_s0=True,
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Other child jobs


def probe_existing_s0(work: str) -> str | None:
    """None if `pyramid_flow("<g>/s0", "<g>")` reuses an existing s0 (no s0 chunk file
    rewritten, s1 written), else why not."""
    import numpy as np
    import zarr

    from flows import pyramid_flow

    group = f"{work}/probe.zarr"
    s0 = zarr.open_group(group, mode="w", zarr_format=3).create_array(
        "s0", shape=(128,) * 3, dtype="uint8", chunks=(CHUNK,) * 3
    )
    s0[:] = np.arange(128**3, dtype=np.uint64).reshape(s0.shape).astype(np.uint8)
    chunk_files = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in Path(group, "s0", "c").rglob("*")
        if p.is_file()
    }
    try:
        pyramid_flow(f"{group}/s0", group, scale_factors=[2], method="mean", chunks=(CHUNK,) * 3)
    except Exception as error:  # noqa: BLE001 - the reason is reported, not raised
        return f"pyramid_flow raised {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    finally:
        time.sleep(SETTLE_SECONDS)
    rewritten = sum(
        not p.exists() or (p.stat().st_ino, p.stat().st_mtime_ns) != v
        for p, v in chunk_files.items()
    )
    if rewritten:
        return (
            f"pyramid_flow rewrote {rewritten} of {len(chunk_files)} s0 chunk files "
            "(it copies s0 onto itself)"
        )
    if not Path(group, "s1", "zarr.json").exists():
        return "pyramid_flow wrote no s1"
    return None


def check_exact(
    reference: str, groups: dict[str, str], labels: bool, seed: int = 0
) -> dict[str, list[str]]:
    """Per contender, what differs from `reference` ("sN x %" per differing level, and for an
    image the largest difference; empty: equal everywhere). Levels above WHOLE_UP_TO voxels are
    compared on SAMPLE_CHUNKS random 64^3 chunks."""
    import numpy as np
    import tensorstore as ts

    ref_paths = level_paths(reference)
    rng = np.random.default_rng(seed)
    report: dict[str, list[str]] = {}
    for name, group in groups.items():
        paths = level_paths(group)
        report[name] = (
            []
            if len(paths) == len(ref_paths)
            else [f"{len(paths) - 1} levels, not {len(ref_paths) - 1}"]
        )
        for level, (ref_path, path) in enumerate(zip(ref_paths, paths)):
            ref, other = (ts.open(ts_spec(p), read=True).result() for p in (ref_path, path))
            if tuple(ref.shape) != tuple(other.shape):
                report[name].append(f"s{level}: shape {tuple(other.shape)}, not {tuple(ref.shape)}")
                continue
            if np.prod(ref.shape) <= WHOLE_UP_TO:
                regions = [tuple(slice(None) for _ in ref.shape)]
            else:
                grid = [-(-s // CHUNK) for s in ref.shape]
                picks = rng.integers(0, grid, size=(SAMPLE_CHUNKS, len(grid)))
                regions = [tuple(slice(c * CHUNK, (c + 1) * CHUNK) for c in pick) for pick in picks]
            differ = voxels = largest = 0
            for region in regions:
                a, b = ref[region].read().result(), other[region].read().result()
                differ += int(np.count_nonzero(a != b))
                voxels += a.size
                largest = max(largest, int(np.abs(a.astype(np.int64) - b).max()))
            if differ:
                report[name].append(
                    f"s{level} {100 * differ / voxels:.1f} %"
                    + ("" if labels else f" (<= {largest})")
                )
    return report


def non_constant_cubes(source: str, side: int = 256) -> list[float]:
    """Per level k = 1..5, the share of 2^k cubes of the input's first side^3 voxels that hold
    more than one value: evidence that mode has work to do at every level."""
    import numpy as np
    import tensorstore as ts

    x = ts.open(ts_spec(source), read=True).result()[:side, :side, :side].read().result()
    shares = []
    for level in range(1, LEVELS + 1):
        f, n = 2**level, side // 2**level
        windows = x.reshape(n, f, n, f, n, f)
        shares.append(float(np.mean(windows.min(axis=(1, 3, 5)) != windows.max(axis=(1, 3, 5)))))
    return shares


def run_downsample(method: str, factor: int, source: str, output: str) -> None:
    from flows import downsample_flow

    downsample_flow(source, factor, output, method=method, num_workers=WORKERS)


def warm_up_downsample(method: str) -> None:
    import numpy as np

    from flows import downsample_flow

    downsample_flow(np.zeros((8, 8, 8), np.uint8), 2, method=method)
    time.sleep(SETTLE_SECONDS)


def run_one(request: dict[str, Any]) -> dict[str, Any]:
    """Child entry: one job of `request["job"]`; returns the RESULT fields (timed jobs: seconds
    around the work only and the bytes read meanwhile)."""
    job = request["job"]
    if job == "probe":
        return {"unsupported": probe_existing_s0(request["work"])}
    if job == "check":
        return {
            "exact": check_exact(request["reference"], request["groups"], request["labels"]),
            "non_constant": non_constant_cubes(request["input"]) if request["labels"] else None,
        }
    if job == "downsample":
        warm_up_downsample(request["method"])

        def work() -> float | None:
            return run_downsample(
                request["method"], request["factor"], request["input"], request["output"]
            )
    else:
        contender = CONTENDERS[request["contender"]]
        for module in contender.imports:
            importlib.import_module(module)
        contender.prepare(request["method"], request["input"], request["output"])

        def work() -> float | None:
            return contender.run(request["method"], request["input"], request["output"])

    settle_disk()
    read_before = tree_rchar()
    started = time.perf_counter()
    seconds = work()
    elapsed = time.perf_counter() - started
    return {
        "seconds": seconds if isinstance(seconds, float) else elapsed,
        "read_bytes": tree_rchar() - read_before,
    }


def child_main(request: dict[str, Any], tag: str) -> None:
    print(tag + json.dumps(run_one(request) | {"self_rss_mb": peak_rss_mb()}), flush=True)
