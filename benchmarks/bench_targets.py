"""bench.py's report: the table of each case and the issue's targets on the paired ratios."""

from __future__ import annotations

import statistics

from bench_results import (
    Cell,
    Check,
    TargetChecks,
    median_range,
    paired_ratios,
    ratio_or_none,
    valid,
)
from downsample_contenders import BIOIMAGE_PY, FACTOR, OURS, SKIMAGE, Case

TENSORSTORE_LIMITS = {  # ours / tensorstore downsample, per case
    "order0-image": 1.3,
    "order0-labels": 1.3,
    "stride-image": 1.3,
    "stride-labels": 1.3,
    "mean-image": 1.3,
    "mode-labels": 1.5,
}


def print_table(case: Case, cells: dict[str, Cell], input_mb: float, repeats: int) -> None:
    print(
        f"\n== {case.name}: {case.volume}, factor {FACTOR}, method {case.method}"
        + (
            f", order {case.order}, anti-aliasing {case.anti_aliasing}"
            if case.method == "resize"
            else ""
        )
        + f"; median (min-max) of {repeats}, input {input_mb:.0f} MB"
    )
    print(
        f"{'contender':36} {'wall s':>20} {'input MB/s':>11} {'peak RSS MB':>12} "
        f"{'ours/contender':>22}"
    )
    for name, cell in cells.items():
        seconds = valid(cell.seconds)
        if cell.skipped:
            print(f"{name:36} {cell.skipped}")
            continue
        if cell.error and not seconds:
            print(f"{name:36} failed: {cell.error}")
            continue
        ratio = "" if name == OURS else median_range(paired_ratios(cells[OURS], cell))
        rate = f"{input_mb / statistics.median(seconds):.0f}" if seconds else "-"
        rss = f"{statistics.median(valid(cell.rss_mb)):.0f}" if valid(cell.rss_mb) else "-"
        print(f"{name:36} {median_range(seconds):>20} {rate:>11} {rss:>12} {ratio:>22}")
    pure = cells.get("ours no Prefect (threads x2)")
    if pure and valid(pure.seconds) and valid(cells[OURS].seconds):
        shares = [1 - p / f for f, p in zip(cells[OURS].seconds, pure.seconds) if f and p]
        print(
            "Prefect's share of ours (1 - no-Prefect/flow, paired): "
            f"{median_range([100 * s for s in shares])} %"
        )


def target_checks(results: dict[str, dict[str, Cell]]) -> list[Check]:
    """The issue's targets: (what, measured, met) from the paired median ratios; met is None and
    measured "not measured (skipped: ...)" where a contender of the comparison was skipped."""
    checks = TargetChecks(results)
    for case, limit in TENSORSTORE_LIMITS.items():
        checks.ratio(
            f"{case}: ours/tensorstore <= {limit}",
            case,
            OURS,
            "tensorstore downsample",
            lambda v, bound=limit: v <= bound,
        )
    skimage_checks(checks)
    checks.ratio(
        "order1aa-image: bioimage-py/ours >= 2",
        "order1aa-image",
        BIOIMAGE_PY,
        OURS,
        lambda v: v >= 2,
    )
    for case in results:
        peer_checks(checks, case)
    return checks.rows


def skimage_checks(checks: TargetChecks) -> None:
    """order1aa-image against scikit-image's whole-array resize: time, and then peak RSS."""
    rss_target = "order1aa-image: ours peak RSS <= skimage's / 4"
    results = checks.results
    if (
        checks.ratio(
            "order1aa-image: skimage/ours >= 4", "order1aa-image", SKIMAGE, OURS, lambda v: v >= 4
        )
        is not None
    ):
        cells = results["order1aa-image"]
        ours_rss = statistics.median(valid(cells[OURS].rss_mb))
        sk_rss = statistics.median(valid(cells[SKIMAGE].rss_mb))
        checks.rows.append(
            (rss_target, f"{ours_rss:.0f} vs {sk_rss:.0f} MB", ours_rss <= sk_rss / 4)
        )
    elif (
        SKIMAGE in results.get("order1aa-image", {}) and results["order1aa-image"][SKIMAGE].skipped
    ):
        checks.rows.append(
            (rss_target, f"not measured ({results['order1aa-image'][SKIMAGE].skipped})", None)
        )


def peer_checks(checks: TargetChecks, case: str) -> None:
    """On `case`: ours faster than bioimage-py and dask.array, and Prefect's share of ours."""
    for peer in (BIOIMAGE_PY, "dask.array"):
        checks.ratio(
            f"{case}: ours faster than {peer.split()[0]}",
            case,
            OURS,
            peer,
            lambda v: v < 1,
            "ours/peer {:.2f}x",
        )
    if (
        value := ratio_or_none(checks.results, case, "ours no Prefect (threads x2)", OURS)
    ) is not None:
        checks.rows.append(
            (f"{case}: Prefect <= 5% of wall", f"{100 * (1 - value):.1f} %", 1 - value <= 0.05)
        )
