"""Results the benchmark scripts share: a contender's cell of repeats, paired ratios, target
checks, the results JSON, and the scaling comparison of result JSONs of several sizes (--compare).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCALING_LIMIT = (
    1.2  # --compare: peak RSS ratio and seconds-per-voxel ratio allowed between two sizes
)
Check = tuple[str, str, bool | None]  # (what, measured, met); met None: not measured


@dataclass
class Cell:
    """Results of one contender on one case, one entry per repeat (None where a run failed);
    `skipped` says why it was not run at all (then both lists are empty)."""

    seconds: list[float | None] = field(default_factory=list)
    rss_mb: list[float | None] = field(default_factory=list)
    error: str | None = None
    cpu_s: list[float | None] = field(default_factory=list)  # the contender process's CPU
    server_cpu_s: list[float | None] = field(default_factory=list)  # the Prefect server's
    skipped: str | None = None


def median_range(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-"
    )


def paired_ratios(a: Cell, b: Cell) -> list[float]:
    """a/b per repeat (the runs of one repeat ran back to back, so drift cancels)."""
    return [
        x / y for x, y in zip(a.seconds, b.seconds) if x is not None and y is not None and y > 0
    ]


def valid(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


class TargetChecks:
    """The checks of one benchmark's `results`, in the order they are added."""

    def __init__(self, results: dict[str, dict[str, Cell]]):
        self.results = results
        self.rows: list[Check] = []

    def ratio(
        self,
        what: str,
        case: str,
        a: str,
        b: str,
        met: Callable[[float], bool],
        show: str = "{:.2f}x",
    ) -> float | None:
        """Adds the check on the paired median a/b; nothing if a or b was not selected or never
        succeeded."""
        cells = self.results.get(case, {})
        if a not in cells or b not in cells:
            return None
        if skipped := cells[a].skipped or cells[b].skipped:
            self.rows.append((what, f"not measured ({skipped})", None))
            return None
        values = paired_ratios(cells[a], cells[b])
        if not values:
            return None
        value = statistics.median(values)
        self.rows.append((what, show.format(value), met(value)))
        return value


def ratio_or_none(results: dict[str, dict[str, Cell]], case: str, a: str, b: str) -> float | None:
    cells = results.get(case, {})
    values = paired_ratios(cells[a], cells[b]) if a in cells and b in cells else []
    return statistics.median(values) if values else None


def verdict(met: bool | None) -> str:
    return "--  " if met is None else "MET " if met else "MISS"


def compare_sizes(paths: list[Path], ours: str) -> None:
    """The issue's scaling targets for ours from result JSONs of several sizes: for each case and
    each pair of neighbouring sizes (512 and 1024, say), peak RSS ratio <= SCALING_LIMIT (flat in
    volume size) and wall-time ratio / voxel ratio <= SCALING_LIMIT (linear in volume size), on
    the medians. Per size and case the newest file that measured ours on it is used."""
    newest = newest_results(paths, ours)
    sizes = sorted(newest)
    if len(sizes) < 2:
        raise SystemExit(
            f"--compare needs results of at least two sizes with ours measured; got sizes {sizes} "
            f"from {len(paths)} file(s)"
        )
    for small, large in zip(sizes, sizes[1:]):
        print_scaling(newest, small, large)
        cases = [c for c in newest[large] if c in newest[small]]
        files = sorted({newest[size][c][0] for size in (small, large) for c in cases})
        print(f"from {', '.join(files)}")


Newest = dict[int, dict[str, tuple[str, dict[str, Any]]]]  # {size: {case: (file name, cells)}}


def newest_results(paths: list[Path], ours: str) -> Newest:
    """Per size and case, the newest of `paths` that measured `ours` on it."""
    newest: Newest = {}
    for path in sorted(
        paths, key=lambda p: p.name
    ):  # bench-SIZE-YYYYmmdd-HHMMSS.json: by time within a size
        report = json.loads(path.read_text())
        for case, cells in report["cases"].items():
            if valid(cells.get(ours, {}).get("seconds", [])):
                newest.setdefault(report["size"], {})[case] = (path.name, cells)
    return newest


def print_scaling(newest: Newest, small: int, large: int) -> None:
    """The scaling table of our rows (names starting with "ours") from `small`^3 to `large`^3."""
    voxels = (large / small) ** 3
    print(
        f"\n== scaling {small}^3 -> {large}^3 ({voxels:.0f}x the voxels), medians; targets: "
        f"peak RSS ratio <= {SCALING_LIMIT} (flat), wall-time ratio / {voxels:.0f} "
        f"<= {SCALING_LIMIT} (linear)"
    )
    print(
        f"{'case':15} {'contender':29} {'wall s':>15} {'x time':>7} {'s/voxel':>8}      "
        f"{'peak RSS MB':>13} {'x RSS':>6}"
    )
    for case in (c for c in newest[large] if c in newest[small]):
        for name in (n for n in newest[large][case][1] if n.startswith("ours")):
            a, b = newest[small][case][1].get(name), newest[large][case][1][name]
            if not a or not valid(a["seconds"]) or not valid(b["seconds"]):
                continue
            ta, tb = (
                statistics.median(valid(a["seconds"])),
                statistics.median(valid(b["seconds"])),
            )
            ra, rb = (
                statistics.median(valid(a["rss_mb"])),
                statistics.median(valid(b["rss_mb"])),
            )
            per_voxel = tb / ta / voxels
            print(
                f"{case:15} {name:29} {f'{ta:.2f} -> {tb:.2f}':>15} {tb / ta:7.2f} "
                f"{per_voxel:8.2f} {verdict(per_voxel <= SCALING_LIMIT)} "
                f"{f'{ra:.0f} -> {rb:.0f}':>13} {rb / ra:6.2f} "
                f"{verdict(rb / ra <= SCALING_LIMIT)}"
            )


def cases_json(results: dict[str, dict[str, Cell]]) -> dict[str, dict[str, Any]]:
    """The results JSON's "cases": every cell of every case as a dict."""
    return {
        case: {name: asdict(cell) for name, cell in cells.items()}
        for case, cells in results.items()
    }


def targets_json(checks: list[Check]) -> list[dict[str, Any]]:
    """The results JSON's "targets"."""
    return [{"target": w, "measured": m, "met": ok} for w, m, ok in checks]


def value_check(what: str, value: Any, show: str, met: bool) -> Check:
    """(what, `value` formatted by `show`, met), or "not measured" if `value` is None."""
    return (what, show.format(value), met) if value is not None else (what, "not measured", None)


def print_targets(title: str | None, checks: list[Check], width: int) -> None:
    """The checks under "== targets (`title`)", one a line: verdict, what (`width` wide),
    measured."""
    print(f"\n== targets ({title})" if title else "\n== targets")
    for what, measured, met in checks:
        print(f"{verdict(met)} {what:{width}} {measured}")


def save_results(out: Path, prefix: str, report: dict[str, Any]) -> Path:
    """`report` as `out`/PREFIX-YYYYmmdd-HHMMSS.json (path printed)."""
    path = out / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\nresults: {path}")
    return path
