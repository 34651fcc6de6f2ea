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

SKIMAGE = "skimage resize (whole array)"


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slurm",
        action="store_true",
        help="also run on SLURM (scripts/slurm-test-cluster.sh start)",
    )
    return parser.parse_args()


def backend_configs(slurm: bool, root: str) -> dict[str, tuple[str, int, RunnerConfig]]:
    """{name: (job_type, num_workers, job_config)} of the backends to time."""
    backends = {
        "threads x1": ("local", 1, RunnerConfig()),
        "threads x2": ("local", 2, RunnerConfig()),
        "subprocess x2": ("subprocess", 2, LocalClusterConfig()),
    }
    if slurm:
        backends["slurm x2"] = (
            "slurm",
            2,
            SlurmConfig(interface="lo", memory="2GB", log_directory=f"{root}/logs"),
        )
    return backends


def run_backends(
    root: str,
    repeat: int,
    backends: dict[str, tuple[str, int, RunnerConfig]],
    times: dict[str, list[float]],
) -> dict[str, np.ndarray]:
    """One repeat of the downsample on every backend, each into a new output: the seconds are
    appended to `times`; returns each backend's result."""
    outputs = {}
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
    return outputs


def run_skimage(root: str, shape: tuple[int, ...], times: dict[str, list[float]]) -> np.ndarray:
    """scikit-image's resize of the whole input (read included): its seconds are appended to
    `times`; returns its float result."""
    started = time.perf_counter()
    reference = resize(
        zarr.open_array(f"{root}/in.zarr", path="raw")[:],
        tuple(s // 2 for s in shape),
        order=1,
        anti_aliasing=True,
        preserve_range=True,
        mode="reflect",
    )
    times[SKIMAGE].append(time.perf_counter() - started)
    return reference


def print_table(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    outputs: dict[str, np.ndarray],
    reference: np.ndarray,
) -> None:
    """Per backend: median and range of the seconds, the ratio to scikit-image, whether the
    result equals scikit-image's."""
    baseline = statistics.median(times[SKIMAGE])
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


def main() -> None:
    args = parse_args()
    root = tempfile.mkdtemp(prefix="bioimage-bench-")
    shape = (args.size,) * 3
    image = smooth_image(shape)
    zarr.create_array(
        store=f"{root}/in.zarr", name="raw", shape=shape, dtype="uint8", chunks=(64, 64, 64)
    )[:] = image
    backends = backend_configs(args.slurm, root)
    times: dict[str, list[float]] = {name: [] for name in [*backends, SKIMAGE]}
    outputs = {}
    for repeat in range(args.repeats):
        outputs |= run_backends(root, repeat, backends, times)
        reference = run_skimage(root, shape, times)
    reference = np.clip(np.rint(reference), 0, 255).astype(np.uint8)
    print_table(args, times, outputs, reference)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
