"""Microscopy files to OME-Zarr pyramids (issue 23's two targets), one run each, ratios paired.

    python benchmarks/czi.py czi  [--z 5,16] [--channels 3] [--mosaic 4] [--tile 1024] [--repeats 2]
    python benchmarks/czi.py many [--files 200] [--planes 32] [--side 256] [--repeats 3]
                                  [--deletion fresh|before|both]

`czi`: a tiled uint16 CZI per `--z` value, written by pylibCZIrw like a microscope writes a
mosaic (MOSAIC x MOSAIC tiles of TILE^2 per plane, CHANNELS channels, Z planes, scaling 0.5 x 0.5
x 1 um, a smooth field plus a little noise, uncompressed), converted to a 3-level pyramid by
  - ours: `bioimage_tasks.convert(file, out, levels=3, num_workers=2)` (exact window means);
  - bioio-ome-zarr: `OMEZarrWriter(level_shapes=ours).write_full_volume(BioImage(file).dask_data)`
    on 2 dask threads (what was measured before);
  - bioio-conversion: `OmeZarrConverter(source=file, level_shapes=ours, n_workers=2).convert()`
    (2 processes, one shard each);
the peers in a venv of their own (created on first use: their pins are not ours). Contenders
alternate in each repeat, each in a fresh process; printed: wall time, peak RSS of the process
tree, the paired ratio peer/ours, and every level checked: s0 against pylibCZIrw's own read,
level k against tensorstore's mean downsample of that read (bioio's order-0 levels are not
means: their share of differing voxels is shown).

`many`: FILES uint16 OME-TIFF stacks of PLANES x SIDE x SIDE and one OME-TIFF of all of them
concatenated along z, each converted by `bioimage_tasks.convert(..., levels=3, num_workers=2)`
in a fresh process, alternating; the target is files / concatenated <= 1.5 (paired median).
Each run writes into a new folder, none within 35 s of a mass deletion (`--deletion fresh`):
unjournaled ext4 skips inodes freed in the last ~30 s, which made runs right after deleting the
previous output (~13,000 inodes; `--deletion before`, the old way) pay for it. `both`
interleaves the two in one window. Outputs are deleted after all repeats (keep free ~2 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402
import bench_runs  # noqa: E402
from bench_results import median_range  # noqa: E402
from bench_runs import RESULT_TAG, peak_rss_mb  # noqa: E402
from czi_contenders import CONTENDERS, LEVELS, OURS, RUNNABLE  # noqa: E402
from czi_many import many_benchmark, paired  # noqa: E402

SCRIPT = Path(__file__).resolve()
DEFAULT_DATA = (
    Path("/work/bench-data/czibench") if Path("/work").is_dir() else bench_runs.DEFAULT_ROOT
)
PEER_PACKAGES = {
    "bioio_conversion": ["bioio-conversion==3.0.0", "bioio-ome-zarr", "bioio-czi", "bioio"]
}
SPEEDUP_TARGET = 2.0  # peer / ours


def make_czi(data: Path, z: int, channels: int, mosaic: int, tile: int) -> Path:
    """A mosaic CZI, tile by tile as a microscope stage writes it; kept for later runs."""
    import numpy as np
    from pylibCZIrw import czi as pyczi

    path = data / f"mosaic-c{channels}-z{z}-{mosaic}x{mosaic}x{tile}.czi"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:tile, :tile].astype(np.float32)
    partial = path.with_suffix(".partial.czi")
    with pyczi.create_czi(str(partial), exist_ok=True) as czi:
        for c in range(channels):
            for k in range(z):
                for row in range(mosaic):
                    for col in range(mosaic):
                        gy, gx = y + row * tile, x + col * tile
                        field = (np.sin(gx / 91.0 + c) + np.cos(gy / 57.0 - k / 7.0)) * 9000
                        noise = rng.integers(0, 32, (tile, tile))
                        czi.write(
                            data=(field + 20000 + 500 * c + noise).astype(np.uint16),
                            plane={"C": c, "Z": k, "T": 0},
                            location=(col * tile, row * tile),
                        )
        czi.write_metadata(
            document_name="mosaic",
            channel_names={c: f"ch{c}" for c in range(channels)},
            scale_x=0.5e-6,
            scale_y=0.5e-6,
            scale_z=1e-6,
        )
    partial.rename(path)
    return path


def czi_volume(path: str) -> Any:
    """The whole (c, z, y, x) volume, read plane by plane by pylibCZIrw itself."""
    import numpy as np
    from pylibCZIrw import czi as pyczi

    with pyczi.open_czi(path) as czi:
        box = czi.total_bounding_box
        channels, planes = box["C"][1] - box["C"][0], box["Z"][1] - box["Z"][0]
        first = czi.read(plane={"C": 0, "Z": 0, "T": 0})[..., 0]
        volume = np.empty((channels, planes, *first.shape), first.dtype)
        for c in range(channels):
            for k in range(planes):
                volume[c, k] = czi.read(plane={"C": c, "Z": k, "T": 0})[..., 0]
    return volume


def level_paths(group: str) -> list[str]:
    """The level arrays of an OME-Zarr group, s0 first, from its multiscales metadata."""
    root = Path(group)
    meta = json.loads((root / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    return [str(root / d["path"]) for d in meta["datasets"]]


def check_levels(group: str, volume: Any, factors: list[tuple[int, ...]]) -> list[str]:
    """Per level: 'exact' or the share of voxels that differ from tensorstore's mean of
    `volume` (s0: from `volume` itself) and any shape mismatch."""
    import numpy as np
    import tensorstore as ts
    import zarr

    verdicts = []
    for path, factor in zip(level_paths(group), factors):
        level = zarr.open_array(path, mode="r")[...]
        if len(factor) < volume.ndim:  # a single channel: the output has no channel axis
            volume = volume.reshape([n for n in volume.shape if n != 1])
        expected = ts.downsample(ts.array(volume), list(factor), "mean").read().result()
        if np.squeeze(level).shape == np.squeeze(expected).shape:
            level = level.reshape(expected.shape)  # a peer's singleton t axis
        if level.shape != expected.shape:
            verdicts.append(f"shape {level.shape} != {expected.shape}")
        elif np.array_equal(level, expected):
            verdicts.append("exact")
        else:
            verdicts.append(f"{np.mean(level != expected):.1%} differ")
    return verdicts


def our_factors(group: str) -> list[tuple[int, ...]]:
    """Each level's cumulative factor from the group's scale transforms (ours are window
    means: the scale ratio is the window)."""
    root = Path(group)
    meta = json.loads((root / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    scales = [
        next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
        for d in meta["datasets"]
    ]
    return [tuple(round(a / b) for a, b in zip(s, scales[0])) for s in scales]


def contenders_once(
    args: argparse.Namespace, czi: Path, repeat: int, work: Path, peer: tuple
) -> dict[str, dict[str, Any]]:
    """Every contender once on `czi`, order rotated by `repeat`; results by name."""
    names = list(CONTENDERS)
    names = names[repeat % len(names) :] + names[: repeat % len(names)]
    results = {}
    for name in names:
        is_peer = CONTENDERS[name][1]
        if is_peer and "bioio_conversion" not in peer[1]:
            continue
        out = work / f"{name.split()[0]}-{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        request = {
            "contender": name,
            "input": str(czi),
            "output": str(out / f"{czi.stem}.ome.zarr") if is_peer else str(out),
            "shapes": args.shapes,
        }
        bench_runs.settle_disk()
        try:
            result, rss = bench_runs.run_child(
                peer[0] if is_peer else sys.executable,
                args.env,
                request,
                args.timeout,
                SCRIPT,
                args.max_rss * 1024,
            )
            result |= {"rss_mb": rss, "out": str(out)}
            print(
                f"  #{repeat + 1} {name}: {result['seconds']:.1f} s, CPU {result['cpu']:.1f} s, "
                f"peak RSS {rss:.0f} MB"
            )
        except RuntimeError as error:
            result = {"error": str(error), "out": str(out)}
            print(f"  #{repeat + 1} {name}: FAILED {error}")
        sys.stdout.flush()
        results[name] = result
    return results


def czi_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    peer = bench_peers.peer_venv(args.peer_venv, PEER_PACKAGES)
    summary: dict[str, Any] = {}
    for z in args.z:
        czi = make_czi(args.data, z, args.channels, args.mosaic, args.tile)
        size = czi.stat().st_size
        print(
            f"\n{czi}: {args.channels} ch x {z} z x {args.mosaic * args.tile}^2, "
            f"{args.mosaic}x{args.mosaic} tiles of {args.tile}^2, {size / 1e9:.2f} GB",
            flush=True,
        )
        bench_runs.read_through(czi)
        work = args.data / "runs"
        args.shapes = probe_shapes(args, czi, work)
        runs: dict[str, list] = {name: [] for name in CONTENDERS}
        for repeat in range(args.repeats):
            for name, result in contenders_once(args, czi, repeat, work, peer).items():
                runs[name].append(result)
        checks = exactness(runs, czi)
        summary[str(z)] = {"file": str(czi), "bytes": size, "runs": runs, "checks": checks}
        print_czi_table(z, size, runs, checks)
        shutil.rmtree(work, ignore_errors=True)
    return summary


def probe_shapes(args: argparse.Namespace, czi: Path, work: Path) -> list[list[int]]:
    """Our level shapes for `czi` (a dry run of the pyramid's plan), given to the peers."""
    import bioimage_tasks
    from bioimage_tasks.api import pyramid_operation

    del bioimage_tasks
    operation = pyramid_operation(str(czi), str(work / "probe.ome.zarr"), levels=LEVELS)
    return [list(s) for s in operation.spec.shapes]


def exactness(runs: dict[str, list], czi: Path) -> dict[str, list[str]]:
    """Each contender's last output checked level by level, against pylibCZIrw's read."""
    volume = czi_volume(str(czi))
    checks = {}
    ours_group = next((r["groups"][0] for r in runs[OURS][::-1] if "groups" in r), None)
    for name, results in runs.items():
        done = [r for r in results if "groups" in r]
        if not done or ours_group is None:
            continue
        group = done[-1]["groups"][0]
        factors = our_factors(done[-1]["groups"][0] if name == OURS else ours_group)
        checks[name] = check_levels(group, volume, factors)
        print(f"  levels of {name}: {', '.join(checks[name])}", flush=True)
    return checks


def print_czi_table(z: int, size: int, runs: dict[str, list], checks: dict) -> None:
    ours = runs[OURS]
    print(f"\n== {size / 1e9:.2f} GB CZI (z={z}), {LEVELS} levels, {len(ours)} repeat(s)")
    print(
        f"{'contender':48} {'wall s (median)':>16} {'peer/ours wall':>20} "
        f"{'peer/ours CPU':>20} {'peak RSS MB':>12}"
    )
    for name, results in runs.items():
        seconds = [r["seconds"] for r in results if "seconds" in r]
        if not seconds:
            continue
        wall, cpu = paired(ours, results, "seconds"), paired(ours, results, "cpu")
        rss = max(r["rss_mb"] for r in results if "rss_mb" in r)
        shown = ("-", "-") if name == OURS else (median_range(wall), median_range(cpu))
        print(
            f"{name:48} {statistics.median(seconds):16.1f} {shown[0]:>20} {shown[1]:>20} "
            f"{rss:12.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("czi", "many"), nargs="?", default="czi")
    parser.add_argument("--z", default="5,16", help="CZI planes per channel, one file per value")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--mosaic", type=int, default=4, help="tiles per side of the mosaic")
    parser.add_argument("--tile", type=int, default=1024, help="mosaic tile side")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--planes", type=int, default=32)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--deletion",
        choices=("fresh", "before", "both"),
        default="fresh",
        help="many: each run into a fresh folder, or right after deleting the previous output",
    )
    parser.add_argument("--max-rss", type=float, default=12.0, help="GB; a tree above is killed")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per contender run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="generated inputs (kept)")
    parser.add_argument("--out", type=Path, default=bench_runs.DEFAULT_ROOT / "results")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_DATA / "peer-venv")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        sys.path.insert(0, str(bench_runs.REPO))
        request = json.loads(args.run_one)
        result = RUNNABLE[request["contender"]][0](request)
        print(RESULT_TAG + json.dumps(result | {"self_rss_mb": peak_rss_mb()}), flush=True)
        return
    args.z = [int(v) for v in args.z.split(",")]
    args.data.mkdir(parents=True, exist_ok=True)
    args.env = os.environ | {"PYTHONPATH": str(bench_runs.REPO), "OMP_NUM_THREADS": "1"}
    summary = czi_benchmark(args) if args.mode == "czi" else many_benchmark(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"czi-{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
