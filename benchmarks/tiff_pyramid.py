"""A tiled OME-TIFF to an OME-Zarr pyramid (s0..s5, window means x2): `pyramid_flow` against
ngff-zarr's TIFF conversion on the same file, one run.

    python benchmarks/tiff_pyramid.py [--size 1024] [--tile 256] [--compression zlib|none]
                                      [--repeats 1]

The input is a SIZE^3 uint16 ZYX OME-TIFF (BigTIFF, zlib or none, TILE^2 tiles, PhysicalSize 1 um),
generated once into --data by tifffile (nothing is downloaded). Each contender runs in a fresh
process (ngff-zarr in the peer venv) and writes every level with 64^3 chunks to a new group:
ours is `pyramid_flow(tiff, group, scale_factors=[2]*5, method="mean", num_workers=2)` (voxel
size from the OME metadata); ngff-zarr is `tiff_file_to_ngff_images` + `to_multiscales(...,
method=DASK_BIN_SHRINK)` + `to_ngff_zarr(version="0.5")` on 2 dask threads, what its CLI does
for a TIFF. Reported per contender: wall time around the work, peak RSS of the process tree,
bytes read (rchar), and for ours the number of strip/tile decodes against the number of tiles.
Ratios ours/ngff-zarr are paired per repeat: read those, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import peer_venv  # noqa: E402
from bench_results import Check, print_targets, save_results, value_check  # noqa: E402
from bench_runs import (  # noqa: E402
    REPO,
    RESULT_TAG,
    SETTLE_SECONDS,
    RunSpace,
    add_child_arguments,
    peak_rss_mb,
    read_through,
    rotation,
    run_child,
    settle_disk,
)
from bench_volumes import CHUNK  # noqa: E402
from downsample_contenders import WORKERS  # noqa: E402

SCRIPT = Path(__file__).resolve()
LEVELS = 5
PEER_PACKAGES = {"ngff_zarr": ["ngff-zarr[dask-image]==0.50.0", "zarr>=3.1,<3.2", "tifffile"]}
SPEEDUP_TARGET = 2.0  # ngff-zarr / ours
RSS_LIMIT_MB = 1024.0


def make_tiff(data: Path, size: int, tile: int, compression: str) -> Path:
    """SIZE^3 uint16: smooth structure plus noise, written tile by tile as a tiled BigTIFF
    OME-TIFF (`compression` "zlib" or "none"); kept in `data` for later runs."""
    import numpy as np
    import tifffile

    path = data / f"stack-{size}-tile{tile}-{compression}.ome.tif"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size].astype(np.float32)
    smooth = (np.sin(x / 37.0) + np.cos(y / 23.0)) * 8000 + 20000

    def tiles():  # tifffile takes an iterator of tiles, plane after plane, edge tiles padded
        for z in range(size):
            plane = (smooth + 100 * z / size + rng.integers(0, 64, (size, size))).astype(np.uint16)
            plane = np.pad(plane, [(0, -size % tile)] * 2)
            for top in range(0, size, tile):
                for left in range(0, size, tile):
                    yield plane[top : top + tile, left : left + tile]

    partial = path.with_suffix(".partial")
    tifffile.imwrite(
        partial,
        tiles(),
        shape=(size, size, size),
        dtype=np.uint16,
        tile=(tile, tile),
        bigtiff=True,
        ome=True,
        compression=None if compression == "none" else compression,
        maxworkers=WORKERS,
        metadata={"axes": "ZYX", "PhysicalSizeX": 1.0, "PhysicalSizeY": 1.0, "PhysicalSizeZ": 1.0},
    )
    partial.rename(path)
    return path


def count_decodes() -> list[int]:
    """Count every strip or tile tifffile decodes in this process (one list item each): our
    segment reader and tifffile's zarr store both call the key frame's `decode`."""
    import tifffile

    decoded: list[int] = []
    original = tifffile.TiffPage.__dict__["decode"].func

    def counting(page):
        decode = original(page)

        def wrapper(data, index, **options):
            decoded.append(index)
            return decode(data, index, **options)

        return wrapper

    tifffile.TiffPage.decode = property(counting)
    return decoded


def run_ours(tiff: str, group: str) -> dict[str, Any]:
    import numpy as np

    from flows import pyramid_flow

    pyramid_flow(
        np.zeros((16, 16, 16), np.uint16), f"{group}-warm-up.zarr", scale_factors=[2]
    )  # Prefect's set-up
    shutil.rmtree(f"{group}-warm-up.zarr", ignore_errors=True)
    time.sleep(SETTLE_SECONDS)
    decoded = count_decodes()
    return timed(
        lambda: pyramid_flow(
            tiff,
            group,
            scale_factors=[2] * LEVELS,
            method="mean",
            chunks=(CHUNK,) * 3,
            num_workers=WORKERS,
        )
    ) | {"decodes": len(decoded)}


def run_ngff_zarr(tiff: str, group: str) -> dict[str, Any]:
    import dask
    from ngff_zarr import Methods, tiff_file_to_ngff_images, to_multiscales, to_ngff_zarr

    def work() -> None:
        ((_, image),) = tiff_file_to_ngff_images(tiff, series=0)
        with dask.config.set(scheduler="threads", num_workers=WORKERS):
            multiscales = to_multiscales(
                image,
                scale_factors=[2**level for level in range(1, LEVELS + 1)],
                chunks=CHUNK,
                method=Methods.DASK_BIN_SHRINK,
            )
            to_ngff_zarr(group, multiscales, version="0.5")

    return timed(work)


def timed(work) -> dict[str, Any]:
    from pyramid_contenders import tree_rchar

    settle_disk()
    read_before = tree_rchar()
    started = time.perf_counter()
    work()
    return {"seconds": time.perf_counter() - started, "read_bytes": tree_rchar() - read_before}


CONTENDERS = {
    "ours pyramid_flow (threads x2)": (run_ours, False),
    "ngff-zarr (dask threads x2)": (run_ngff_zarr, True),
}


def level_shapes(group: str) -> list[list[int]]:
    """Shapes of s0..sN from the group's NGFF 0.5 metadata."""
    root = Path(group)
    multiscale = json.loads((root / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    return [
        json.loads((root / d["path"] / "zarr.json").read_text())["shape"]
        for d in multiscale["datasets"]
    ]


def tile_count(args: argparse.Namespace) -> int:
    """How many tiles the --size stack has: --tile^2 tiles (edge tiles padded) per plane."""
    return args.size * (-(-args.size // args.tile)) ** 2


def benchmark(args: argparse.Namespace) -> None:
    tiff = make_tiff(args.data, args.size, args.tile, args.compression)
    tiles = tile_count(args)
    base = tiff.stat().st_size
    peer_python, peer_modules = peer_venv(args.peer_venv, PEER_PACKAGES)
    space = RunSpace("tiff-pyramid-")
    print(
        f"{tiff}: {args.size}^3 uint16, tiles {args.tile}^2 ({tiles} tiles), "
        f"{base / 1e9:.2f} GB on disk",
        flush=True,
    )
    read_through(tiff)  # every contender then reads it from the page cache, the first one too
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    try:
        for repeat in range(args.repeats):
            for name in rotation(list(CONTENDERS), repeat):
                peer = CONTENDERS[name][1]
                if peer and "ngff_zarr" not in peer_modules:
                    print(
                        f"  {name}: skipped, ngff-zarr is not installable in the peer venv",
                        flush=True,
                    )
                    continue
                python = peer_python if peer else sys.executable
                runs[name].append(run_once(args, space, tiff, name, repeat, python))
    finally:
        space.close()
    report(args, runs, tiles, base)


def run_once(
    args: argparse.Namespace,
    space: RunSpace,
    tiff: Path,
    name: str,
    repeat: int,
    python: str,
) -> dict[str, Any]:
    """One run of contender `name` with `python` into a new group, removed afterwards: its result
    (seconds, bytes read, peak RSS, level shapes; decodes for ours) or its error, printed."""
    tiles = tile_count(args)
    base = tiff.stat().st_size
    group = str(space.output(f"out-{repeat}", ".ome.zarr"))
    request = {"contender": name, "input": str(tiff), "output": group}
    try:
        result, rss = run_child(
            python, space.env, request, args.timeout, SCRIPT, args.max_rss * 1024
        )
        result |= {"rss_mb": rss, "shapes": level_shapes(group)}
        print(
            f"  #{repeat + 1} {name}: {result['seconds']:.1f} s, "
            f"peak RSS {rss:.0f} MB, read {result['read_bytes'] / base:.2f}x the file"
            + (f", {result['decodes']} decodes for {tiles} tiles" if "decodes" in result else ""),
            flush=True,
        )
    except RuntimeError as error:
        result = {"error": str(error)}
        print(f"  #{repeat + 1} {name}: FAILED {error}", flush=True)
    shutil.rmtree(group, ignore_errors=True)
    return result


def report(
    args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], tiles: int, base: int
) -> None:
    ours, peer = (runs[name] for name in CONTENDERS)
    ratios = [
        b["seconds"] / a["seconds"] for a, b in zip(ours, peer) if "seconds" in a and "seconds" in b
    ]
    speedup = statistics.median(ratios) if ratios else None
    print_runs(args, runs, base)
    print_targets(None, target_checks(ours, peer, tiles, speedup), 48)
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(
        args.out,
        f"tiff-pyramid-{args.size}-{args.compression}",
        {
            "size": args.size,
            "tile": args.tile,
            "compression": args.compression,
            "tiles": tiles,
            "file_bytes": base,
            "runs": runs,
            "speedup": speedup,
        },
    )


def print_runs(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], base: int) -> None:
    """The heading, then each run's peak RSS and bytes read (or its error)."""
    good = [r for r in runs[next(iter(CONTENDERS))] if "seconds" in r]
    print(
        f"\n== {args.size}^3 uint16 OME-TIFF, tiles {args.tile}^2 {args.compression}, "
        f"{LEVELS} levels x2 (mean), "
        f"{len(good)} repeat(s)"
    )
    for name, results in runs.items():
        for r in results:
            if "error" in r:
                print(f"{name:32} failed: {r['error']}")
            else:
                print(
                    f"{name:32} peak RSS {r['rss_mb']:6.0f} MB, "
                    f"read {r['read_bytes'] / base:5.2f}x the file"
                )


def target_checks(
    ours: list[dict[str, Any]], peer: list[dict[str, Any]], tiles: int, speedup: float | None
) -> list[Check]:
    """Speed-up over ngff-zarr, our peak RSS, one decode per tile, same level shapes."""
    good = [r for r in ours if "seconds" in r]
    rss = max((r["rss_mb"] for r in good), default=None)
    decodes = max((r["decodes"] for r in good), default=None)
    same_shapes = all(
        a.get("shapes") == b.get("shapes") for a, b in zip(ours, peer) if "shapes" in b
    )
    return [
        value_check(
            f"ngff-zarr / ours >= {SPEEDUP_TARGET:.0f} (paired median)",
            speedup,
            "{:.2f}x",
            speedup is not None and speedup >= SPEEDUP_TARGET,
        ),
        value_check(
            f"ours peak RSS <= {RSS_LIMIT_MB:.0f} MB",
            rss,
            "{:.0f} MB",
            rss is not None and rss <= RSS_LIMIT_MB,
        ),
        value_check(f"ours decodes = tiles ({tiles})", decodes, "{}", decodes == tiles),
        value_check("same level shapes as ngff-zarr", same_shapes, "{}", same_shapes),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=1024, help="the stack is SIZE^3 uint16 (1024: 2.1 GB raw)"
    )
    parser.add_argument("--tile", type=int, default=256, help="TIFF tile side")
    parser.add_argument(
        "--compression", choices=("zlib", "none"), default="zlib", help="of the TIFF's tiles"
    )
    parser.add_argument("--repeats", type=int, default=1)
    add_child_arguments(parser, timeout=3600, data_help="generated TIFFs (kept)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        sys.path.insert(0, str(REPO))
        request = json.loads(args.run_one)
        result = CONTENDERS[request["contender"]][0](request["input"], request["output"])
        print(RESULT_TAG + json.dumps(result | {"self_rss_mb": peak_rss_mb()}), flush=True)
        return
    args.data.mkdir(parents=True, exist_ok=True)
    benchmark(args)


if __name__ == "__main__":
    main()
