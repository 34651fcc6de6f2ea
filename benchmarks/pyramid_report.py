"""pyramid.py's report: the table of each case and the issue's targets (time against tensorstore
and ome-zarr-py, peak RSS, bytes read, levels exact)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import pyramid_contenders as pc
from bench import CASES as ALL_CASES
from bench_results import Cell, median_range, paired_ratios, ratio_or_none, valid, value_check

CASES = {name: ALL_CASES[name] for name in ("mean-image", "mode-labels")}
TIME_LIMITS = {"mean-image": 1.2, "mode-labels": 1.5}  # ours / tensorstore chained
OMEZARR_SPEEDUP = 4.0  # ome-zarr-py / ours on the mean pyramid
RSS_LIMIT_MB = 1024.0
READ_LIMIT = 1.2  # bytes read / base size on disk


@dataclass
class PyramidCell(Cell):
    read_bytes: list[int | None] = field(default_factory=list)
    exact: list[str] | None = (
        None  # what differs from tensorstore-from-base (empty: exact); None: not checked
    )


def partner(name: str) -> str:
    """The row of ours that `name` is compared with: the existing-s0 variant for existing-s0
    contenders."""
    return pc.OURS_EXISTING if pc.CONTENDERS[name].existing_s0 else pc.OURS


def median_or_none(values: list[Any]) -> float | None:
    return statistics.median(valid(values)) if valid(values) else None


def exact_text(name: str, cell: PyramidCell) -> str:
    if name in (pc.TS_BASE, pc.IO_FLOOR):
        return "(reference)" if name == pc.TS_BASE else "(not a pyramid)"
    if cell.exact is None:
        return "-"
    return "exact" if not cell.exact else "differ: " + ", ".join(cell.exact)


def print_table(
    case: str, cells: dict[str, PyramidCell], size: int, base_bytes: int, repeats: int
) -> None:
    volume = CASES[case].volume
    print(
        f"\n== {case}: {size}^3 {'uint8 image' if volume == 'image' else 'uint32 labels'}, "
        f"{pc.LEVELS} levels x2, method {CASES[case].method}; median (min-max) of {repeats}; "
        f"base {base_bytes / 1e6:.0f} MB on disk"
    )
    print(
        f"{'contender':34} {'wall s':>19} {'peak RSS MB':>11} {'read MB':>8} {'read/base':>9} "
        f"{'ours/contender':>19}  levels vs tensorstore from base"
    )
    for name, cell in cells.items():
        if cell.skipped:
            print(f"{name:34} {cell.skipped}")
            continue
        if cell.error and not valid(cell.seconds):
            print(f"{name:34} failed: {cell.error}")
            continue
        read = median_or_none(cell.read_bytes)
        rss = median_or_none(cell.rss_mb)
        ours = partner(name)
        ratio = (
            median_range(paired_ratios(cells[ours], cell)) if name != ours and ours in cells else ""
        )
        print(
            f"{name:34} {median_range(valid(cell.seconds)):>19} {rss or 0:11.0f} "
            f"{(read or 0) / 1e6:8.0f} "
            f"{(read or 0) / base_bytes:8.2f}x {ratio:>19}  {exact_text(name, cell)}"
        )
    if pc.OURS_EXISTING in cells:
        print(
            f"(ours/contender of the existing-s0 rows is '{pc.OURS_EXISTING}' over them; "
            "read = rchar while timed)"
        )


def target_checks(
    results: dict[str, dict[str, PyramidCell]], base_bytes: dict[str, int]
) -> list[tuple[str, str, bool | None]]:
    """The issue's targets on the paired medians (what, measured, met; met None: not measured)."""
    checks: list[tuple[str, str, bool | None]] = []
    for case, limit in TIME_LIMITS.items():
        if case not in results:
            continue
        checks += time_checks(results, case, limit)
        for ours in (pc.OURS, pc.OURS_EXISTING):
            cell = results[case].get(ours)
            if cell is not None and not cell.skipped:
                checks += resource_checks(case, ours, cell, base_bytes[case])
    return checks


def time_checks(
    results: dict[str, dict[str, PyramidCell]], case: str, limit: float
) -> list[tuple[str, str, bool | None]]:
    """Ours against tensorstore chained (from scratch and on an existing s0), and for the mean
    pyramid ome-zarr-py against ours."""
    value = ratio_or_none(results, case, pc.OURS, "tensorstore chained")
    existing = ratio_or_none(results, case, pc.OURS_EXISTING, "tensorstore chained, existing s0")
    checks = [
        value_check(
            f"{case}: ours/tensorstore chained <= {limit}",
            value,
            "{:.2f}x",
            value is not None and value <= limit,
        ),
        value_check(
            f"{case}: same, existing s0 (levels 1..5 only) <= {limit}",
            existing,
            "{:.2f}x",
            existing is not None and existing <= limit,
        ),
    ]
    if case == "mean-image":
        value = ratio_or_none(results, case, "ome-zarr-py write_image", pc.OURS)
        checks.append(
            value_check(
                f"{case}: ome-zarr-py/ours >= {OMEZARR_SPEEDUP:.0f}",
                value,
                "{:.2f}x",
                value is not None and value >= OMEZARR_SPEEDUP,
            )
        )
    return checks


def resource_checks(
    case: str, ours: str, cell: PyramidCell, base_bytes: int
) -> list[tuple[str, str, bool | None]]:
    """One row of ours: peak RSS, bytes read against the base's size, levels exact."""
    rss = median_or_none(cell.rss_mb)
    read = median_or_none(cell.read_bytes)
    value = None if read is None else read / base_bytes
    checks = [
        value_check(
            f"{case}: {ours} peak RSS <= {RSS_LIMIT_MB:.0f} MB",
            rss,
            "{:.0f} MB",
            rss is not None and rss <= RSS_LIMIT_MB,
        ),
        value_check(
            f"{case}: {ours} bytes read <= {READ_LIMIT}x base",
            value,
            "{:.2f}x",
            value is not None and value <= READ_LIMIT,
        ),
    ]
    if cell.exact is not None:
        checks.append(
            (
                f"{case}: {ours} levels = tensorstore from base",
                ", ".join(cell.exact) or "exact",
                not cell.exact,
            )
        )
    return checks
