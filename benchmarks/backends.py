"""Wall time of one fixed downsample on each backend, measured in the same run on the same data
(alternating, median of --repeats), with scikit-image's whole-array resize as the reference peer.

    python benchmarks/backends.py [--size 256] [--repeats 3] [--slurm]

Machines here are shared and noisy: read the ratios, not the seconds."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import numpy as np
import zarr
from skimage.transform import resize

from bioimage_tasks.runners import LocalClusterConfig, RunnerConfig, SlurmConfig
from bioimage_tasks.sample_data import smooth_image
from flows import downsample_flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slurm",
        action="store_true",
        help="also run on SLURM (scripts/slurm-test-cluster.sh start)",
    )
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bioimage-bench-")
    shape = (args.size,) * 3
    image = smooth_image(shape)
    zarr.create_array(
        store=f"{root}/in.zarr", name="raw", shape=shape, dtype="uint8", chunks=(64, 64, 64)
    )[:] = image
    backends = {
        "threads x1": ("local", 1, RunnerConfig()),
        "threads x2": ("local", 2, RunnerConfig()),
        "subprocess x2": ("subprocess", 2, LocalClusterConfig()),
    }
    if args.slurm:
        backends["slurm x2"] = (
            "slurm",
            2,
            SlurmConfig(interface="lo", memory="2GB", log_directory=f"{root}/logs"),
        )
    times: dict[str, list[float]] = {
        name: [] for name in [*backends, "skimage resize (whole array)"]
    }
    outputs = {}
    for repeat in range(args.repeats):
        for name, (job_type, workers, config) in backends.items():
            output = f"{root}/out-{repeat}-{name.replace(' ', '')}.zarr/s1"
            started = time.perf_counter()
            outputs[name] = downsample_flow(
                f"{root}/in.zarr/raw",
                2,
                output,
                order=1,
                anti_aliasing=True,
                job_type=job_type,
                num_workers=workers,
                job_config=config,
            )[:]
            times[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        reference = resize(
            zarr.open_array(f"{root}/in.zarr", path="raw")[:],
            tuple(s // 2 for s in shape),
            order=1,
            anti_aliasing=True,
            preserve_range=True,
            mode="reflect",
        )
        times["skimage resize (whole array)"].append(time.perf_counter() - started)
    reference = np.clip(np.rint(reference), 0, 255).astype(np.uint8)
    baseline = statistics.median(times["skimage resize (whole array)"])
    print(
        f"\n{args.size}^3 uint8, factor 2, order 1 + anti-aliasing, 64^3 chunks; "
        f"median of {args.repeats}"
    )
    print(
        f"{'backend':32} {'median s':>9} {'min-max s':>13} {'vs skimage':>11} "
        f"{'equals skimage':>15}"
    )
    for name, values in times.items():
        equal = "" if name not in outputs else str(np.array_equal(outputs[name], reference))
        print(
            f"{name:32} {statistics.median(values):9.2f} {min(values):6.2f}-{max(values):<6.2f} "
            f"{statistics.median(values) / baseline:10.2f}x {equal:>15}"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
