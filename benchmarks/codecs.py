"""What a codec costs: one downsample (factor 2, 2 threads) of a generated image (uint8, `mean`)
and label volume (uint32, `mode`) into a new zarr v3 output per `OutputOptions`, each compared
with today's default (zarr's zstd level 0): wall time ratio and bytes written ratio.

    .venv/bin/python benchmarks/codecs.py [--size 384] [--repeats 3]

It times the flow's per-block path without Prefect (the same plan, sink and kernels; see
`run_ours_pure` in downsample_contenders.py): a flow call adds a fixed ~0.2-0.3 s, and back-to-back
calls on an SQLite server now and then wait 2 s (README), which would drown what the codec costs.
The options alternate within each repeat (the order rotates); a cell is the median (min-max) over
repeats of the per-repeat ratio to the default. Read the ratios: the machines are shared."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zarr  # noqa: E402

from bioimage_tasks import OutputOptions, as_source  # noqa: E402
from bioimage_tasks.blockwise import BlockJob, process_batch  # noqa: E402
from bioimage_tasks.planning import block_records, plan_blockwise  # noqa: E402
from bioimage_tasks.records import RECORDS_DIR  # noqa: E402
from bioimage_tasks.resampling import WindowedSource  # noqa: E402
from bioimage_tasks.sample_data import blob_labels, smooth_image  # noqa: E402

BASE = "default (zstd 0)"
OPTIONS = {
    BASE: None,
    "zstd 3": OutputOptions(codec="zstd"),
    "zstd 9": OutputOptions(codec="zstd", level=9),
    "blosc-lz4 5": OutputOptions(codec="blosc-lz4"),
    "gzip 6": OutputOptions(codec="gzip"),
    "zstd 3, shards 128^3": OutputOptions(codec="zstd", shards=(128, 128, 128)),
}
CASES = {"image uint8, mean": ("image", "mean"), "labels uint32, mode": ("labels", "mode")}
WORKERS = 2


def downsample(source: str, output: str, method: str, options: OutputOptions | None) -> float:
    """Seconds to downsample `source` x2 into a new `output` on 2 threads, block records
    included."""
    started = time.perf_counter()
    plan = plan_blockwise(
        WindowedSource(as_source(source), (2, 2, 2), method), output, output_options=options
    )
    sink = plan.output.open()
    job = BlockJob(plan.source, sink, plan.grid, None, block_records(plan, sink), plan.piece_shape)
    with ThreadPoolExecutor(WORKERS) as pool:
        list(
            pool.map(
                lambda batch: process_batch(job, batch), plan.batches(plan.block_ids, WORKERS, None)
            )
        )
    return time.perf_counter() - started


def stored_bytes(directory: str) -> int:
    """Bytes of the array's chunk and shard files (metadata, records and cached results left
    out)."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        if RECORDS_DIR not in root
        for name in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-codecs-")
    shape = (args.size,) * 3
    for name, volume in (("image", smooth_image(shape)), ("labels", blob_labels(shape))):
        zarr.create_array(
            store=f"{root}/in.zarr", name=name, shape=shape, dtype=volume.dtype, chunks=(64,) * 3
        )[:] = volume

    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for repeat in range(args.repeats):
        for case, (volume, method) in CASES.items():
            names = list(OPTIONS)
            names = names[repeat % len(names) :] + names[: repeat % len(names)]
            seconds, sizes = {}, {}
            for option in names:
                output = f"{root}/out.zarr/{volume}-{repeat}-{list(OPTIONS).index(option)}"
                seconds[option] = downsample(
                    f"{root}/in.zarr/{volume}", output, method, OPTIONS[option]
                )
                sizes[option] = stored_bytes(output)
                shutil.rmtree(output)
            for option in names:
                ratios.setdefault((case, option), []).append(
                    (seconds[option] / seconds[BASE], sizes[option] / sizes[BASE])
                )
    print(
        f"\n{args.size}^3 -> {args.size // 2}^3, 2 threads, no Prefect, {args.repeats} repeats; "
        "ratio to the default"
    )
    print(
        "| case | options | time ratio (median, min-max) | bytes written ratio |\n|---|---|---|---|"
    )
    for (case, option), values in ratios.items():
        times, sizes = [v[0] for v in values], [v[1] for v in values]
        print(
            f"| {case} | {option} | {statistics.median(times):.2f} "
            f"({min(times):.2f}-{max(times):.2f}) | "
            f"{statistics.median(sizes):.3f} |"
        )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
