"""OME-Zarr pyramids (s0..s5, factor 2 per level): `pyramid_flow` against the peers, same data,
one run.

    python benchmarks/pyramid.py [--size 256|512|1024] [--repeats 3]
                                 [--cases mean-image,mode-labels]
                                 [--contenders tensorstore,ngff] [--max-rss 8] [--out DIR]
                                 [--data DIR]
    # peak RSS / time scaling of ours across sizes
    python benchmarks/pyramid.py --compare [RESULTS.json ...]
    # 2048^3 uint32 labels, ours only, once
    python benchmarks/pyramid.py --scale-run
    # downsample_flow of the labels at large factors
    python benchmarks/pyramid.py --downsample-factors 16,32

Every contender runs in its own fresh process and writes the complete pyramid (s0 a copy of the
input, 64^3 chunks, the input's codec) to a new group; contenders alternate (the order rotates
each repeat). Per contender: wall time (around the work only), peak RSS of its process tree
(sampled every 50 ms; above --max-rss the tree is killed), and bytes read while the clock runs
(/proc/PID/io rchar). Ratios ours/contender are paired per repeat; read those, not the seconds.
See benchmarks/README.md ("Pyramids").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyramid_contenders as pc  # noqa: E402
from bench_chart import chart, draw_chart  # noqa: E402
from bench_peers import PEER_PACKAGES as BENCH_PEER_PACKAGES  # noqa: E402
from bench_peers import peer_venv  # noqa: E402
from bench_results import (  # noqa: E402
    cases_json,
    compare_sizes,
    print_targets,
    save_results,
    targets_json,
)
from bench_runs import (  # noqa: E402
    REPO,
    RESULT_TAG,
    RunSpace,
    add_case_arguments,
    add_child_arguments,
    rotation,
    run_child,
    selected,
    wanted_names,
)
from bench_volumes import CHUNK, disk_mb, make_volumes  # noqa: E402
from pyramid_modes import SCALE_SIZE, downsample_factors, scale_run  # noqa: E402
from pyramid_report import CASES, PyramidCell, print_table, target_checks  # noqa: E402

SCRIPT = Path(__file__).resolve()
PEER_PACKAGES = BENCH_PEER_PACKAGES | {
    "ome_zarr": ["ome-zarr==0.18.0", "zarr>=3.1,<3.2"],
    "ngff_zarr": ["ngff-zarr[dask-image]==0.50.0", "zarr>=3.1,<3.2"],
}


class Runner(RunSpace):
    """Runs child jobs against one Prefect server (our venv) or in the peer venv."""

    def __init__(self, args: argparse.Namespace, peer_python: str | None):
        self.args, self.peer_python = args, peer_python
        super().__init__("pyramid-runs-")
        print(f"Prefect server {self.server.url}; runs in {self.work}", flush=True)

    def run(self, request: dict[str, Any], peer: bool = False) -> tuple[dict[str, Any], float]:
        python = self.peer_python if peer else sys.executable
        return run_child(
            python, self.env, request, self.args.timeout, SCRIPT, self.args.max_rss * 1024
        )


def run_case(
    runner: Runner, case: str, source: str, names: list[str], skipped: dict[str, str]
) -> dict[str, PyramidCell]:
    """All repeats of one case; the first repeat's outputs are checked against tensorstore from
    base."""
    cells = {name: PyramidCell(skipped=skipped.get(name)) for name in names}
    runnable = [name for name in names if not cells[name].skipped]
    kept: dict[str, str] = {}
    for repeat in range(runner.args.repeats):
        for name in rotation(runnable, repeat):
            group = run_once(
                runner, case, source, name, f"{case} #{repeat + 1} {name}", cells[name]
            )
            if cells[name].seconds[-1] is not None and name not in kept:
                kept[name] = group
            else:
                shutil.rmtree(group, ignore_errors=True)
    if pc.TS_BASE in kept:
        check_exactness(runner, case, source, kept, cells)
    for group in kept.values():
        shutil.rmtree(group, ignore_errors=True)
    return cells


def run_once(
    runner: Runner, case: str, source: str, name: str, label: str, cell: PyramidCell
) -> str:
    """One run of contender `name` into a new group (returned): its seconds, peak RSS and bytes
    read, or None and the error, appended to `cell` and printed."""
    group = str(runner.output(case))
    request = {
        "job": "run",
        "contender": name,
        "method": CASES[case].method,
        "input": source,
        "output": group,
    }
    try:
        result, rss = runner.run(request, peer=pc.CONTENDERS[name].peer is not None)
        seconds, read = result["seconds"], result["read_bytes"]
        print(
            f"  {label}: {seconds:.2f} s, {rss:.0f} MB, read {read / 1e6:.0f} MB",
            flush=True,
        )
    except RuntimeError as error:
        seconds = rss = read = None
        cell.error = str(error)
        print(f"  {label}: FAILED {error}", flush=True)
    cell.seconds.append(seconds)
    cell.rss_mb.append(rss)
    cell.read_bytes.append(read)
    return group


def check_exactness(
    runner: Runner, case: str, source: str, kept: dict[str, str], cells: dict[str, PyramidCell]
) -> None:
    """Compares the `kept` groups' levels with tensorstore's from base (one child job) and notes
    what differs in each cell; for labels, prints how many small cubes are not constant."""
    try:
        request = {
            "job": "check",
            "reference": kept[pc.TS_BASE],
            "input": source,
            "groups": {n: g for n, g in kept.items() if n not in (pc.TS_BASE, pc.IO_FLOOR)},
            "labels": CASES[case].volume == "labels",
        }
        result, _ = runner.run(request)
        for name, differs in result["exact"].items():
            cells[name].exact = differs
        if result["non_constant"]:
            print(
                "  labels: share of non-constant 2^k cubes in the first 256^3, "
                f"k=1..{pc.LEVELS}: "
                + ", ".join(f"{100 * s:.1f} %" for s in result["non_constant"]),
                flush=True,
            )
    except RuntimeError as error:
        print(f"  exactness check FAILED: {error}", flush=True)


def contender_names(args: argparse.Namespace) -> list[str]:
    """The contenders --contenders selects, ours and tensorstore from base always, and ours on an
    existing s0 when a selected contender starts from one."""
    wanted = wanted_names(args.contenders)
    names = [n for n in pc.CONTENDERS if n in (pc.OURS, pc.TS_BASE) or selected(n, wanted)]
    if (
        wanted
        and pc.OURS_EXISTING not in names
        and any(pc.CONTENDERS[n].existing_s0 for n in names)
    ):
        names.append(pc.OURS_EXISTING)
    return names


def skipped_contenders(runner: Runner, names: list[str], peer_modules: set[str]) -> dict[str, str]:
    """{contender: why it is skipped}: its peer package is missing, or it starts from an existing
    s0 that pyramid_flow cannot reuse yet (asked of a child job)."""
    skipped = {
        n: f"skipped: {pc.CONTENDERS[n].peer} is not installable in the peer venv"
        for n in names
        if pc.CONTENDERS[n].peer and pc.CONTENDERS[n].peer not in peer_modules
    }
    if any(pc.CONTENDERS[n].existing_s0 for n in names):
        probe, _ = runner.run({"job": "probe", "work": str(runner.work)})
        if probe["unsupported"]:
            print(
                "!! existing-s0 variant skipped: pyramid_flow does not reuse an existing s0 yet "
                f"({probe['unsupported']})"
            )
            skipped |= {
                n: "skipped: pyramid_flow does not reuse an existing s0 yet"
                for n in names
                if pc.CONTENDERS[n].existing_s0
            }
    return skipped


def benchmark(runner: Runner, args: argparse.Namespace, peer_modules: set[str]) -> None:
    volumes = make_volumes(args.data, args.size)
    names = contender_names(args)
    skipped = skipped_contenders(runner, names, peer_modules)
    results, base_bytes = {}, {}
    for case in (c for c in args.cases.split(",") if c):
        source = volumes[CASES[case].volume]
        base_bytes[case] = int(disk_mb(Path(source)) * 1e6)
        results[case] = run_case(runner, case, source, names, skipped)
        print_table(case, results[case], args.size, base_bytes[case], args.repeats)
    for case, cells in results.items():
        print_table(case, cells, args.size, base_bytes[case], args.repeats)
    checks = target_checks(results, base_bytes)
    print_targets("paired median ratios; RSS and bytes read: medians", checks, 66)
    path = save_results(
        args.out,
        f"pyramid-{args.size}",
        {
            "size": args.size,
            "repeats": args.repeats,
            "levels": pc.LEVELS,
            "chunks": CHUNK,
            "base_bytes": base_bytes,
            "cases": cases_json(results),
            "targets": targets_json(checks),
        },
    )
    if runner.peer_python and "matplotlib" in peer_modules:
        chart(runner.peer_python, SCRIPT, path)


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_case_arguments(parser, CASES, default_size=1024)
    parser.add_argument(
        "--contenders",
        default="",
        help="comma-separated substrings: only contenders matching one "
        "(ours and tensorstore from base, the exactness reference, always run)",
    )
    add_child_arguments(parser, timeout=1800, data_help="generated volumes (kept)")
    parser.add_argument(
        "--compare",
        nargs="*",
        type=Path,
        metavar="RESULTS.json",
        help="only compare pyramid result JSONs of several sizes; no files: all "
        "pyramid-SIZE-*.json in --out",
    )
    parser.add_argument(
        "--scale-run",
        action="store_true",
        help=f"only the {SCALE_SIZE}^3 label pyramid, ours, once",
    )
    parser.add_argument(
        "--downsample-factors",
        help="only downsample_flow of the --size labels at these factors, e.g. 16,32",
    )
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--chart", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.run_one:
        sys.path.insert(0, str(REPO))
        return pc.child_main(json.loads(args.run_one), RESULT_TAG)
    if args.chart:
        return draw_chart(*args.chart, ours=pc.OURS)
    if args.compare is not None:
        return compare_sizes(
            args.compare or sorted(args.out.glob("pyramid-[0-9]*.json")), ours=pc.OURS
        )
    args.data.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    peer_python, peer_modules = (
        (None, set())
        if args.scale_run or args.downsample_factors
        else peer_venv(args.peer_venv, PEER_PACKAGES)
    )
    runner = Runner(args, peer_python)
    try:
        if args.scale_run:
            scale_run(runner, args)
        elif args.downsample_factors:
            downsample_factors(runner, args)
        else:
            benchmark(runner, args, peer_modules)
    finally:
        runner.close()


if __name__ == "__main__":
    main()
