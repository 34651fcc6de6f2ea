"""Our downsample flows against the peers a user would pick instead, on the same data in one run.

    python benchmarks/bench.py [--size 256|512|1024] [--repeats 3] [--cases mean-image,mode-labels]
                               [--contenders tensorstore,dask] [--out DIR] [--data DIR]
                               [--peer-venv DIR]
    python benchmarks/bench.py --compare [RESULTS.json ...]   # scaling of ours across sizes

Every contender runs in its own fresh Python process (its wall time is measured inside that
process around the work only; its peak RSS is the whole process tree's, sampled by this process).
Contenders alternate within each repeat (the order rotates) and each cell is the median (min-max)
of --repeats runs. The machines are shared and noisy: read the ratios, not the seconds.
Contenders that hold the whole volume in memory are skipped at a size whose estimated peak RSS
exceeds 80 % of MemAvailable. See benchmarks/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_chart import chart, draw_chart
from bench_peers import peer_venv
from bench_results import (
    Cell,
    cases_json,
    compare_sizes,
    print_targets,
    save_results,
    targets_json,
)
from bench_runs import (
    DEFAULT_ROOT,
    REPO,
    RESULT_TAG,
    SERVER_PID_VARIABLE,
    RunSpace,
    add_case_arguments,
    mem_available_mb,
    peak_rss_mb,
    rotation,
    run_child,
    selected,
    settle_disk,
    wanted_names,
)
from bench_targets import print_table, target_checks
from bench_volumes import CHUNK, make_volumes
from downsample_contenders import (
    FACTOR,
    OURS,
    WORKERS,
    Case,
    resize_only,
    run_bioimage_py,
    run_dask,
    run_io_floor,
    run_ours_flow,
    run_ours_pure,
    run_skimage,
    run_tensorstore,
    warm_up_plain,
    warm_up_prefect,
)

# a whole-array contender runs only if its estimated peak fits in this share of MemAvailable
MEMORY_SHARE = 0.8


CASES = {
    case.name: case
    for case in (
        Case("order0-image", "image"),
        Case("order0-labels", "labels"),
        Case("stride-image", "image", "stride"),
        Case("stride-labels", "labels", "stride"),
        Case("mean-image", "image", "mean"),
        Case("mode-labels", "labels", "mode"),
        Case("order1aa-image", "image", order=1, anti_aliasing=True),
    )
}


@dataclass(frozen=True)
class Contender:
    """A way to compute a case: `run(case, input, output)` does the work in a child process after
    `prepare(case)` (untimed) and may return the seconds it wants timed instead of its whole call;
    `peer` contenders run in the separate peer venv."""

    name: str
    applies: Callable[[Case], bool]
    run: Callable[[Case, str, str], float | None]
    imports: tuple[str, ...] = ()  # imported before the clock starts
    prepare: Callable[[Case], None] = lambda case: None
    peer: str | None = None  # the peer-venv package it needs
    # Contenders that hold the whole volume in memory: their peak RSS (MB) measured at 512^3, which
    # scaled by the voxel count estimates the peak at other sizes (None: memory does not grow with
    # it)
    peak_mb_at_512: Callable[[Case], float] | None = None

    def estimated_peak_mb(self, case: Case, size: int) -> float | None:
        return (
            None if self.peak_mb_at_512 is None else self.peak_mb_at_512(case) * (size / 512) ** 3
        )


# --------------------------------------------------------------------------------------------


# Peak RSS MB at 512^3, medians of bench-512-20261124-030016.json (3 repeats, min-max within 1 %)
SKIMAGE_PEAK_MB_AT_512 = {"order0-image": 257, "order0-labels": 746, "order1aa-image": 2390}
IO_FLOOR_PEAK_MB_AT_512 = {"image": 272, "labels": 660}

OUR_MODULES = (
    "flows",
    "bioimage_tasks.blockwise",
    "bioimage_tasks.planning",
    "bioimage_tasks.resampling",
)
ZARR_MODULES = ("numpy", "zarr")

CONTENDERS = {
    c.name: c
    for c in (
        Contender(OURS, lambda case: True, run_ours_flow("local"), OUR_MODULES, warm_up_prefect),
        Contender(
            "ours flow (subprocess x2)",
            lambda case: True,
            run_ours_flow("subprocess"),
            OUR_MODULES,
            warm_up_prefect,
        ),
        Contender(
            "ours no Prefect (threads x2)",
            lambda case: True,
            run_ours_pure,
            OUR_MODULES,
            warm_up_plain,
        ),
        Contender(
            "tensorstore downsample",
            lambda case: not case.anti_aliasing,
            run_tensorstore,
            ("tensorstore",),
        ),
        Contender(
            "dask.array",
            lambda case: case.is_order0 or case.method in ("stride", "mean", "mode"),
            run_dask,
            (*ZARR_MODULES, "dask.array"),
        ),
        Contender(
            "skimage resize (whole array)",
            resize_only,
            run_skimage,
            (*ZARR_MODULES, "skimage.transform"),
            peak_mb_at_512=lambda case: SKIMAGE_PEAK_MB_AT_512[case.name],
        ),
        Contender(
            "bioimage-py 0.2.2 (local x2)",
            resize_only,
            run_bioimage_py,
            (*ZARR_MODULES, "bioimage_py"),
            peer="bioimage_py",
        ),
        Contender(
            "I/O floor (read all + write 1/8)",
            lambda case: True,
            run_io_floor,
            ("numpy", "tensorstore"),
            peak_mb_at_512=lambda case: IO_FLOOR_PEAK_MB_AT_512[case.volume],
        ),
    )
}


def run_one(request: dict[str, Any]) -> None:
    """Child process entry: prepare (untimed), time the work, print one RESULT line."""
    case, contender = CASES[request["case"]], CONTENDERS[request["contender"]]
    for module in contender.imports:
        importlib.import_module(module)
    contender.prepare(case)
    settle_disk()
    server_before = server_cpu_seconds()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    seconds = contender.run(case, request["input"], request["output"])
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    server = None if server_before is None else server_cpu_seconds() - server_before
    print(
        RESULT_TAG
        + json.dumps(
            {
                "seconds": seconds if isinstance(seconds, float) else elapsed,
                "self_rss_mb": peak_rss_mb(),
                "cpu_s": cpu,
                "server_cpu_s": server,
            }
        ),
        flush=True,
    )


def server_cpu_seconds() -> float | None:
    """CPU seconds (user + system) the benchmark's Prefect server has used so far (None without
    one), to report next to a contender's wall time: the server shares the cores."""
    pid = os.environ.get(SERVER_PID_VARIABLE)
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as stat:  # the standard library only: peers import this file
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def skip_reason(contender: Contender, case: Case, size: int, peer_modules: set[str]) -> str | None:
    """Why `contender` cannot run `case` at `size` here ("skipped: ..."), None if it can: its peer
    package is missing, or it holds the whole volume and its estimated peak RSS exceeds
    MEMORY_SHARE of MemAvailable (checked when the case starts)."""
    if contender.peer and contender.peer not in peer_modules:
        return f"skipped: {contender.peer} is not installable in the peer venv"
    needs = contender.estimated_peak_mb(case, size)
    available = mem_available_mb()
    if needs is not None and needs > MEMORY_SHARE * available:
        return f"skipped: needs ~{needs / 1024:.1f} GB, {available / 1024:.1f} GB available"
    return None


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_case_arguments(parser, CASES, default_size=512)
    parser.add_argument(
        "--contenders", default="", help="comma-separated substrings: only contenders matching one"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_ROOT / "results", help="where results JSON and PNG go"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_ROOT / "data",
        help="generated volumes (kept between runs)",
    )
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=DEFAULT_ROOT / "peer-venv",
        help="separate venv for bioimage-py and matplotlib",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per contender run")
    parser.add_argument(
        "--compare",
        nargs="*",
        type=Path,
        metavar="RESULTS.json",
        help="only compare result JSONs of several sizes (the scaling targets); no files: all in "
        "--out",
    )
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--chart", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def input_megabytes(case: Case, size: int) -> float:
    """The input volume's size in MB (uint8 image, uint32 labels)."""
    return size**3 * (1 if case.volume == "image" else 4) / 1e6


def run_cases(
    args: argparse.Namespace,
    cases: list[Case],
    volumes: dict[str, str],
    peer_python: str | None,
    peer_modules: set[str],
) -> dict[str, dict[str, Cell]]:
    """Every case against one Prefect server: {case: {contender: Cell}}; each case's
    table is printed as soon as it is done."""
    runs = RunSpace("runs-")
    print(f"Prefect server {runs.server.url}; runs in {runs.work}", flush=True)
    results: dict[str, dict[str, Cell]] = {}
    try:
        for case in cases:
            cells = results[case.name] = new_cells(case, args, peer_modules)
            runnable = [c for c in cells if not cells[c].skipped]
            for repeat in range(args.repeats):
                for name in rotation(runnable, repeat):
                    request = {
                        "case": case.name,
                        "contender": name,
                        "input": volumes[case.volume],
                        "output": f"{runs.output(case.name)}/s1",
                    }
                    python = peer_python if CONTENDERS[name].peer else sys.executable
                    label = f"{case.name} #{repeat + 1} {name}"
                    record_run(cells[name], label, python, runs.env, request, args.timeout)
            print_table(case, cells, input_megabytes(case, args.size), args.repeats)
    finally:
        runs.close()
    return results


def new_cells(case: Case, args: argparse.Namespace, peer_modules: set[str]) -> dict[str, Cell]:
    """An empty cell per contender that applies to `case` and is selected (ours always), each with
    why it is skipped at --size, if it is (printed)."""
    wanted = wanted_names(args.contenders)
    contenders = [
        c
        for c in CONTENDERS.values()
        if c.applies(case) and (c.name == OURS or selected(c.name, wanted))
    ]
    cells = {c.name: Cell() for c in contenders}
    for contender in contenders:
        cells[contender.name].skipped = skip_reason(contender, case, args.size, peer_modules)
        if cells[contender.name].skipped:
            print(
                f"  {case.name} {contender.name} -- {cells[contender.name].skipped}",
                flush=True,
            )
    return cells


def record_run(
    cell: Cell,
    label: str,
    python: str,
    env: dict[str, str],
    request: dict[str, Any],
    timeout: float,
) -> None:
    """One contender run (`run_child`): its seconds, CPU seconds (its process's and the Prefect
    server's, during the timed work) and peak RSS, or None and the error, appended to `cell` and
    printed; its output is removed."""
    try:
        result, rss = run_child(python, env, request, timeout)
        seconds, cpu, server = result["seconds"], result.get("cpu_s"), result.get("server_cpu_s")
        server_text = "" if server is None else f", server CPU {server:.2f} s"
        cpu_text = "" if cpu is None else f", CPU {cpu:.2f} s{server_text}"
        print(f"  {label}: {seconds:.2f} s{cpu_text}, {rss:.0f} MB", flush=True)
    except RuntimeError as error:
        seconds = rss = cpu = server = None
        cell.error = str(error)
        print(f"  {label}: FAILED {error}", flush=True)
    cell.seconds.append(seconds)
    cell.rss_mb.append(rss)
    cell.cpu_s.append(cpu)
    cell.server_cpu_s.append(server)
    shutil.rmtree(Path(request["output"]).parent, ignore_errors=True)


def main() -> None:
    args = parse_args()
    if args.run_one:
        sys.path.insert(0, str(REPO))
        return run_one(json.loads(args.run_one))
    if args.chart:
        return draw_chart(*args.chart, ours=OURS)
    if args.compare is not None:
        return compare_sizes(args.compare or sorted(args.out.glob("bench-*.json")), ours=OURS)

    cases = [CASES[name] for name in args.cases.split(",") if name]
    args.data.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    volumes = make_volumes(args.data, args.size)
    peer_python, peer_modules = peer_venv(args.peer_venv)
    results = run_cases(args, cases, volumes, peer_python, peer_modules)
    for case in cases:
        print_table(case, results[case.name], input_megabytes(case, args.size), args.repeats)
    checks = target_checks(results)
    print_targets("paired median ratios", checks, 58)
    results_json = save_results(
        args.out,
        f"bench-{args.size}",
        {
            "size": args.size,
            "repeats": args.repeats,
            "factor": FACTOR,
            "chunks": CHUNK,
            "workers": WORKERS,
            "cases": cases_json(results),
            "targets": targets_json(checks),
        },
    )
    if peer_python and "matplotlib" in peer_modules:
        chart(peer_python, Path(__file__).resolve(), results_json)
    else:
        print("chart:   skipped (matplotlib is not available in the peer venv)")


if __name__ == "__main__":
    main()
