"""What a codec costs: one downsample (factor 2, threads x2) of a generated image (uint8, `mean`)
and label volume (uint32, `mode`) into a new zarr v3 output per `OutputOptions`, each compared
with today's default (zarr's zstd level 0): wall time ratio and bytes written ratio.

    .venv/bin/python benchmarks/codecs.py [--size 256] [--repeats 3]

The options alternate within each repeat (the order rotates); a cell is the median over repeats
of the per-repeat ratio to the default. Read the ratios: the machines are shared and noisy."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import zarr  # noqa: E402

from bioimage_tasks import OutputOptions  # noqa: E402
from bioimage_tasks.records import RECORDS_DIR  # noqa: E402
from bioimage_tasks.sample_data import blob_labels, smooth_image  # noqa: E402

OPTIONS = {
    "default (zstd 0)": None,
    "zstd 3": OutputOptions(codec="zstd"),
    "zstd 9": OutputOptions(codec="zstd", level=9),
    "blosc-lz4 5": OutputOptions(codec="blosc-lz4"),
    "gzip 6": OutputOptions(codec="gzip"),
    "zstd 3, shards 256^3": OutputOptions(codec="zstd", shards=(256, 256, 256)),
}
CASES = {"image uint8, mean": ("image", "mean"), "labels uint32, mode": ("labels", "mode")}


def stored_bytes(directory: str) -> int:
    """Bytes of the array's chunk and shard files (metadata, records and cached results left out)."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory)
               if RECORDS_DIR not in root for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-codecs-")
    shape = (args.size,) * 3
    for name, volume in (("image", smooth_image(shape)), ("labels", blob_labels(shape))):
        zarr.create_array(store=f"{root}/in.zarr", name=name, shape=shape, dtype=volume.dtype, chunks=(64,) * 3)[:] = volume

    from prefect.testing.utilities import prefect_test_harness

    from flows import downsample_flow

    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with prefect_test_harness(server_startup_timeout=180):
        downsample_flow(f"{root}/in.zarr/image", 2, f"{root}/warm.zarr/s1", method="mean")  # first-call costs
        for repeat in range(args.repeats):
            for case, (volume, method) in CASES.items():
                names = list(OPTIONS)
                names = names[repeat % len(names):] + names[:repeat % len(names)]
                seconds, sizes = {}, {}
                for option in names:
                    output = f"{root}/out.zarr/{volume}-{repeat}-{names.index(option)}"
                    started = time.perf_counter()
                    downsample_flow(f"{root}/in.zarr/{volume}", 2, output, method=method, num_workers=2,
                                    output_options=OPTIONS[option])
                    seconds[option], sizes[option] = time.perf_counter() - started, stored_bytes(output)
                    shutil.rmtree(output)
                base = "default (zstd 0)"
                for option in names:
                    ratios.setdefault((case, option), []).append((seconds[option] / seconds[base],
                                                                  sizes[option] / sizes[base]))
    print(f"\n{args.size}^3 -> {args.size // 2}^3, threads x2, {args.repeats} repeats; ratio to the default codec")
    print(f"| case | options | time ratio (median, min-max) | bytes written ratio |\n|---|---|---|---|")
    for (case, option), values in ratios.items():
        times, sizes = [v[0] for v in values], [v[1] for v in values]
        print(f"| {case} | {option} | {statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) | "
              f"{statistics.median(sizes):.3f} |")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
