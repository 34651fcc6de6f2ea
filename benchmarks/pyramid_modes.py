"""pyramid.py's one-off modes: --scale-run (one 2048^3 label pyramid, ours only) and
--downsample-factors (downsample_flow of the labels at large factors)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pyramid_contenders as pc
from bench_results import save_results, verdict
from bench_volumes import disk_mb, make_volumes
from pyramid_report import RSS_LIMIT_MB

if TYPE_CHECKING:
    from pyramid import Runner

SCALE_SIZE = 2048


def scale_run(runner: Runner, args: argparse.Namespace) -> None:
    """One 2048^3 uint32 label pyramid (mode, 5 levels), ours only."""
    source = make_volumes(args.data, SCALE_SIZE, ("labels",))["labels"]
    base = disk_mb(Path(source)) * 1e6
    group = str(runner.output("scale"))
    request = {
        "job": "run",
        "contender": pc.OURS,
        "method": "mode",
        "input": source,
        "output": group,
    }
    print(
        f"\n== scale run: {SCALE_SIZE}^3 uint32 labels, {pc.LEVELS} levels x2, mode, "
        "ours (threads x2), once"
    )
    try:
        result, rss = runner.run(request)
        read = result["read_bytes"]
        print(
            f"{pc.OURS}: {result['seconds']:.1f} s, peak RSS {rss:.0f} MB, "
            f"read {read / 1e9:.2f} GB "
            f"({read / base:.2f}x the base's {base / 1e6:.0f} MB)"
        )
        print(
            f"MET  finishes within --max-rss {args.max_rss} GB\n"
            f"{verdict(rss <= RSS_LIMIT_MB)} peak RSS <= {RSS_LIMIT_MB:.0f} MB: {rss:.0f} MB"
        )
        report = {"seconds": result["seconds"], "rss_mb": rss, "read_bytes": read}
    except RuntimeError as error:
        print(f"{pc.OURS}: FAILED {error}\nMISS finishes within --max-rss {args.max_rss} GB")
        report = {"error": str(error)}
    shutil.rmtree(group, ignore_errors=True)
    save_results(
        args.out,
        f"pyramid-scale-{SCALE_SIZE}",
        {"size": SCALE_SIZE, "levels": pc.LEVELS, "method": "mode", "ours": report},
    )


def downsample_factors(runner: Runner, args: argparse.Namespace) -> None:
    """`downsample_flow` of the SIZE^3 labels at large factors (mode and stride): peak RSS vs the
    budget."""
    source = make_volumes(args.data, args.size, ("labels",))["labels"]
    factors = [int(f) for f in args.downsample_factors.split(",")]
    print(
        f"\n== downsample_flow of {args.size}^3 uint32 labels, threads x2, once each; "
        f"target peak RSS <= {RSS_LIMIT_MB:.0f} MB"
    )
    rows = []
    for factor in factors:
        for method in ("mode", "stride"):
            output = f"{runner.output('downsample')}/s1"
            request = {
                "job": "downsample",
                "method": method,
                "factor": factor,
                "input": source,
                "output": output,
            }
            try:
                result, rss = runner.run(request)
                print(
                    f"{verdict(rss <= RSS_LIMIT_MB)} factor {factor:3} {method:7} "
                    f"{result['seconds']:7.2f} s "
                    f"{rss:7.0f} MB peak RSS",
                    flush=True,
                )
                rows.append(
                    {
                        "factor": factor,
                        "method": method,
                        "seconds": result["seconds"],
                        "rss_mb": rss,
                    }
                )
            except RuntimeError as error:
                print(f"MISS factor {factor:3} {method:7} FAILED {error}", flush=True)
                rows.append({"factor": factor, "method": method, "error": str(error)})
            shutil.rmtree(Path(output).parent, ignore_errors=True)
    save_results(args.out, f"pyramid-downsample-{args.size}", {"size": args.size, "runs": rows})
