"""Our downsample flows against the peers a user would pick instead, on the same data in one run.

    python benchmarks/bench.py [--size 256|512|1024] [--repeats 3] [--cases mean-image,mode-labels]
                               [--out DIR] [--data DIR] [--peer-venv DIR]

Every contender runs in its own fresh Python process (its wall time is measured inside that
process around the work only; its peak RSS is the whole process tree's, sampled by this process).
Contenders alternate within each repeat (the order rotates) and each cell is the median (min-max)
of --repeats runs. The machines are shared and noisy: read the ratios, not the seconds.
See benchmarks/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FACTOR = 2
CHUNK = 64
WORKERS = 2
RESULT_TAG = "BENCH-RESULT "
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "bioimage-tasks-bench"
PEER_PACKAGES = {"bioimage_py": ["bioimage-py==0.2.2", "zarr>=3.1,<3.2"], "matplotlib": ["matplotlib"]}
OURS = "ours flow (local x2)"


# --------------------------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Case:
    """One downsample of one volume: `method` "resize" (with `order`, `anti_aliasing`) or a window method."""

    name: str
    volume: str  # "image" (uint8) or "labels" (uint32)
    method: str = "resize"
    order: int = 0
    anti_aliasing: bool = False

    @property
    def flow_kwargs(self) -> dict[str, Any]:
        return {"method": self.method, "order": self.order, "anti_aliasing": self.anti_aliasing}

    @property
    def is_order0(self) -> bool:
        return self.method == "resize" and self.order == 0 and not self.anti_aliasing


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


# --------------------------------------------------------------------------------------------
# Contenders (executed inside the child process; imports are local so the peer venv, which has
# neither bioimage_tasks nor tensorstore's pinned version, can import this file)


def split_path(path: str) -> tuple[str, str]:
    """'dir/x.zarr/key' -> ('dir/x.zarr', 'key')."""
    container, _, key = path.rpartition(".zarr/")
    return container + ".zarr", key


def output_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(s / FACTOR) for s in shape)


def create_zarr(path: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """An empty zarr v3 array at 'dir/x.zarr/key' with 64^3 chunks and zarr's default codec."""
    import zarr

    store, key = split_path(path)
    return zarr.create_array(store=store, name=key, shape=shape, dtype=dtype, chunks=(CHUNK,) * len(shape), fill_value=0)


def warm_up_prefect(case: Case) -> None:
    """One tiny untimed flow call: the process's first flow call pays Prefect's client and flow
    registration set-up, which is per process, not per volume."""
    import numpy as np

    from flows import downsample_flow

    downsample_flow(np.zeros((8, 8, 8), np.uint8), FACTOR, **case.flow_kwargs)


def run_ours_flow(job_type: str) -> Callable[[Case, str, str], None]:
    def run(case: Case, source: str, output: str) -> None:
        from flows import downsample_flow

        downsample_flow(source, FACTOR, output, job_type=job_type, num_workers=WORKERS, **case.flow_kwargs)

    return run


def run_ours_pure(case: Case, source: str, output: str) -> None:
    """The flow's per-block path without Prefect: same plan, same sources, same block records,
    batches on a pool of 2 threads."""
    from concurrent.futures import ThreadPoolExecutor

    from bioimage_tasks.blockwise import BlockJob, plan_batches, process_batch
    from bioimage_tasks.geometry import downscale_shape
    from bioimage_tasks.planning import block_records, plan_blockwise
    from bioimage_tasks.resampling import ResizedSource, WindowedSource
    from bioimage_tasks.sources import as_source

    data = as_source(source)
    factors = (FACTOR,) * len(data.shape)
    if case.method == "resize":
        downsampled = ResizedSource(data, downscale_shape(data.shape, factors), case.order, case.anti_aliasing)
    else:
        downsampled = WindowedSource(data, factors, case.method)
    plan = plan_blockwise(downsampled, output)
    sink = plan.output.open()
    job = BlockJob(plan.source, sink, plan.grid, None, block_records(plan, sink))
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda batch: process_batch(job, batch), plan_batches(plan.block_ids, WORKERS)))


def ts_spec(path: str) -> dict[str, Any]:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}


def ts_create(path: str, like: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A new tensorstore zarr3 array with 64^3 chunks and the same codecs as `like`'s zarr.json."""
    import tensorstore as ts

    codecs = like.spec().to_json().get("metadata", {}).get("codecs")
    metadata: dict[str, Any] = {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [CHUNK] * len(shape)}}}
    if codecs:
        metadata["codecs"] = codecs
    return ts.open(ts_spec(path) | {"metadata": metadata}, create=True, delete_existing=True,
                   dtype=dtype, shape=shape).result()


def run_tensorstore(case: Case, source: str, output: str) -> None:
    """tensorstore's downsample driver (order 0 = stride after dropping the first voxel, which is
    what scikit-image's centre-aligned order 0 picks at an even factor)."""
    import tensorstore as ts

    src = ts.open(ts_spec(source), read=True).result()
    if case.is_order0:
        view = ts.downsample(src[(slice(1, None),) * src.rank].translate_to[0], [FACTOR] * src.rank, "stride")
    else:
        view = ts.downsample(src, [FACTOR] * src.rank, case.method)
    dst = ts_create(output, src, tuple(view.shape), src.dtype)
    dst.write(view.translate_to[0]).result()


def window_mode(x: Any, axis: tuple[int, ...] | None = None, dtype: Any = None) -> Any:
    """Most frequent value of each window (lowest on a tie), for `dask.array.coarsen` (which
    calls it without `axis` on a meta array first)."""
    import numpy as np

    if axis is None:
        return x
    moved = np.moveaxis(x, axis, range(-len(axis), 0))
    window = int(np.prod([x.shape[a] for a in axis]))
    values = np.sort(moved.reshape(moved.shape[: -len(axis)] + (window,)), axis=-1)
    counts = (values[..., :, None] == values[..., None, :]).sum(-1)
    return np.take_along_axis(values, counts.argmax(-1)[..., None], -1)[..., 0]


def run_dask(case: Case, source: str, output: str) -> None:
    """dask.array from the zarr input, strided slicing or `coarsen`, `to_zarr` (2 threads)."""
    import dask
    import dask.array as da
    import numpy as np
    import zarr

    store, key = split_path(source)
    x = da.from_zarr(zarr.open_array(store, path=key, mode="r"))
    axes = {a: FACTOR for a in range(x.ndim)}
    if case.is_order0:
        y = x[(slice(1, None, FACTOR),) * x.ndim]
    elif case.method == "stride":
        y = x[(slice(None, None, FACTOR),) * x.ndim]
    elif case.method == "mean":
        y = da.rint(da.coarsen(np.mean, x, axes, trim_excess=False)).astype(x.dtype)
    elif case.method == "mode":
        y = da.coarsen(window_mode, x, axes, trim_excess=False)
    else:
        raise ValueError(f"no dask contender for {case}")
    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        y.rechunk(CHUNK).to_zarr(create_zarr(output, y.shape, y.dtype))


def run_skimage(case: Case, source: str, output: str) -> None:
    """The whole array read into memory, `skimage.transform.resize`, cast back, written to zarr."""
    import numpy as np
    import zarr
    from skimage.transform import resize

    store, key = split_path(source)
    x = zarr.open_array(store, path=key, mode="r")[:]
    y = resize(x, output_shape(x.shape), order=case.order, anti_aliasing=case.anti_aliasing, mode="reflect",
               preserve_range=True)
    if case.order > 0:
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    create_zarr(output, y.shape, x.dtype)[:] = y.astype(x.dtype)


def run_bioimage_py(case: Case, source: str, output: str) -> None:
    """bioimage-py 0.2.2's `downsample` (the API ours keeps), threads x2, 64^3 output blocks."""
    import bioimage_py
    import zarr

    store, key = split_path(source)
    x = zarr.open_array(store, path=key, mode="r")
    out = create_zarr(output, output_shape(x.shape), x.dtype)
    bioimage_py.downsample(x, FACTOR, out, order=case.order, anti_aliasing=case.anti_aliasing,
                           block_shape=(CHUNK,) * x.ndim, job_type="local", num_workers=WORKERS)


def run_io_floor(case: Case, source: str, output: str) -> float:
    """Read+decode every input chunk and encode+write a prepared 1/8-size output (same codec);
    returns only the I/O seconds (preparing the output array is not timed)."""
    import tensorstore as ts

    src = ts.open(ts_spec(source), read=True).result()
    started = time.perf_counter()
    data = src.read().result()
    read = time.perf_counter() - started
    small = data[(slice(None, None, FACTOR),) * data.ndim].copy()
    dst = ts_create(output, src, small.shape, src.dtype)
    started = time.perf_counter()
    dst.write(small).result()
    return read + time.perf_counter() - started


def resize_only(case: Case) -> bool:
    return case.method == "resize" and (case.is_order0 or case.anti_aliasing)


OUR_MODULES = ("flows", "bioimage_tasks.blockwise", "bioimage_tasks.planning", "bioimage_tasks.resampling")
ZARR_MODULES = ("numpy", "zarr")

CONTENDERS = {
    c.name: c
    for c in (
        Contender(OURS, lambda case: True, run_ours_flow("local"), OUR_MODULES, warm_up_prefect),
        Contender("ours flow (subprocess x2)", lambda case: True, run_ours_flow("subprocess"), OUR_MODULES,
                  warm_up_prefect),
        Contender("ours no Prefect (threads x2)", lambda case: True, run_ours_pure, OUR_MODULES),
        Contender("tensorstore downsample", lambda case: not case.anti_aliasing, run_tensorstore, ("tensorstore",)),
        Contender("dask.array", lambda case: case.is_order0 or case.method in ("stride", "mean", "mode"), run_dask,
                  (*ZARR_MODULES, "dask.array")),
        Contender("skimage resize (whole array)", resize_only, run_skimage, (*ZARR_MODULES, "skimage.transform")),
        Contender("bioimage-py 0.2.2 (local x2)", resize_only, run_bioimage_py, (*ZARR_MODULES, "bioimage_py"),
                  peer="bioimage_py"),
        Contender("I/O floor (read all + write 1/8)", lambda case: True, run_io_floor, ("numpy", "tensorstore")),
    )
}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the forking parent's peak over exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(request: dict[str, Any]) -> None:
    """Child process entry: prepare (untimed), time the work, print one RESULT line."""
    case, contender = CASES[request["case"]], CONTENDERS[request["contender"]]
    for module in contender.imports:
        importlib.import_module(module)
    contender.prepare(case)
    started = time.perf_counter()
    seconds = contender.run(case, request["input"], request["output"])
    elapsed = time.perf_counter() - started
    print(RESULT_TAG + json.dumps({"seconds": seconds if isinstance(seconds, float) else elapsed,
                                   "self_rss_mb": peak_rss_mb()}), flush=True)


# --------------------------------------------------------------------------------------------
# Orchestration (parent process)


@dataclass
class Cell:
    """Results of one contender on one case, one entry per repeat (None where a run failed)."""

    seconds: list[float | None] = field(default_factory=list)
    rss_mb: list[float | None] = field(default_factory=list)
    error: str | None = None


class TreeRssSampler(threading.Thread):
    """Peak summed RSS of a process and all its descendants, sampled every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stopped.is_set():
            try:
                members = [self.process, *self.process.children(recursive=True)]
                total = 0
                for member in members:
                    try:
                        total += member.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self.stopped.wait(0.05)


def make_volumes(data_dir: Path, size: int) -> dict[str, str]:
    """The SIZE^3 uint8 image and uint32 labels as zarr v3, 64^3 chunks, generated once per size."""
    import zarr

    from bioimage_tasks.sample_data import blob_labels, smooth_image

    shape = (size,) * 3
    store = data_dir / f"volumes-{size}.zarr"
    paths = {}
    for name, make in (("image", smooth_image), ("labels", blob_labels)):
        path = f"{store}/{name}"
        if not (store / name / "zarr.json").exists() or zarr.open_array(str(store), path=name).shape != shape:
            print(f"generating {path} ...", flush=True)
            values = make(shape)
            zarr.create_array(store=str(store), name=name, shape=shape, dtype=values.dtype, chunks=(CHUNK,) * 3,
                              overwrite=True)[:] = values
        paths[name] = path
    return paths


def peer_venv(path: Path) -> tuple[str | None, set[str]]:
    """The separate venv for peers that must not touch our pinned environment: created on first
    use; returns its python (None if it cannot be made) and which peer packages import there."""
    python = path / "bin" / "python"
    if not python.exists():
        print(f"creating the peer venv {path} (bioimage-py 0.2.2, matplotlib) ...", flush=True)
        if subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", "--clear", str(path)]).returncode != 0:
            print(f"!! could not create the peer venv {path}: bioimage-py and the chart are skipped", flush=True)
            return None, set()
        for module, requirements in PEER_PACKAGES.items():
            install = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements],
                                     capture_output=True, text=True)
            if install.returncode != 0:
                print(f"!! pip install {' '.join(requirements)} failed in {path}:\n{install.stderr.strip()[-2000:]}",
                      flush=True)
    available = {module for module in PEER_PACKAGES
                 if subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0}
    for module, requirements in PEER_PACKAGES.items():
        if module not in available:
            print(f"!! {requirements[0]} is not available in {path}; its part of the benchmark is skipped "
                  f"(delete {path} to retry the install)", flush=True)
    return str(python), available


class PrefectServer:
    """One `prefect server start` on a free loopback port for the whole benchmark, so no flow call
    pays an ephemeral server's start-up; PREFECT_HOME is a temporary folder."""

    def __init__(self, home: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api"
        self.env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                    "PREFECT_LOGGING_LEVEL": "WARNING"}
        self.log = open(home / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=os.environ | self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Prefect server did not start; see {home / 'server.log'}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def measure(python: str, env: dict[str, str], request: dict[str, Any], timeout: float) -> tuple[float, float]:
    """Run one contender in a fresh process; (seconds, peak tree RSS MB). Raises on failure."""
    child = subprocess.Popen([python, str(Path(__file__).resolve()), "--run-one", json.dumps(request)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    sampler = TreeRssSampler(child.pid)
    sampler.start()
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    finally:
        sampler.stopped.set()
        sampler.join()
    results = [line[len(RESULT_TAG):] for line in stdout.splitlines() if line.startswith(RESULT_TAG)]
    if child.returncode != 0 or not results:
        raise RuntimeError(f"exit {child.returncode}: {stderr.strip().splitlines()[-1] if stderr.strip() else stdout[-500:]}")
    result = json.loads(results[-1])
    return result["seconds"], max(sampler.peak / 2**20, result["self_rss_mb"])


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-"


def paired_ratios(a: Cell, b: Cell) -> list[float]:
    """a/b per repeat (the runs of one repeat ran back to back, so drift cancels)."""
    return [x / y for x, y in zip(a.seconds, b.seconds) if x is not None and y is not None and y > 0]


def valid(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def print_table(case: Case, cells: dict[str, Cell], input_mb: float, repeats: int) -> None:
    print(f"\n== {case.name}: {case.volume}, factor {FACTOR}, method {case.method}"
          + (f", order {case.order}, anti-aliasing {case.anti_aliasing}" if case.method == "resize" else "")
          + f"; median (min-max) of {repeats}, input {input_mb:.0f} MB")
    print(f"{'contender':36} {'wall s':>20} {'input MB/s':>11} {'peak RSS MB':>12} {'ours/contender':>22}")
    for name, cell in cells.items():
        seconds = valid(cell.seconds)
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
        print(f"Prefect's share of ours (1 - no-Prefect/flow, paired): {median_range([100 * s for s in shares])} %")


def target_checks(results: dict[str, dict[str, Cell]]) -> list[tuple[str, str, bool]]:
    """The issue's targets: (what, measured, met) from the paired median ratios."""

    def ratio(case: str, a: str, b: str) -> float | None:
        cells = results.get(case, {})
        if a not in cells or b not in cells:
            return None
        values = paired_ratios(cells[a], cells[b])
        return statistics.median(values) if values else None

    checks: list[tuple[str, str, bool]] = []
    limits = {"order0-image": 1.3, "order0-labels": 1.3, "stride-image": 1.3, "stride-labels": 1.3,
              "mean-image": 1.3, "mode-labels": 1.5}
    for case, limit in limits.items():
        value = ratio(case, OURS, "tensorstore downsample")
        if value is not None:
            checks.append((f"{case}: ours/tensorstore <= {limit}", f"{value:.2f}x", value <= limit))
    if (value := ratio("order1aa-image", "skimage resize (whole array)", OURS)) is not None:
        checks.append(("order1aa-image: skimage/ours >= 4", f"{value:.2f}x", value >= 4))
        cells = results["order1aa-image"]
        ours_rss = statistics.median(valid(cells[OURS].rss_mb))
        sk_rss = statistics.median(valid(cells["skimage resize (whole array)"].rss_mb))
        checks.append(("order1aa-image: ours peak RSS <= skimage's / 4", f"{ours_rss:.0f} vs {sk_rss:.0f} MB",
                       ours_rss <= sk_rss / 4))
    if (value := ratio("order1aa-image", "bioimage-py 0.2.2 (local x2)", OURS)) is not None:
        checks.append(("order1aa-image: bioimage-py/ours >= 2", f"{value:.2f}x", value >= 2))
    for case in results:
        for peer in ("bioimage-py 0.2.2 (local x2)", "dask.array"):
            if (value := ratio(case, OURS, peer)) is not None:
                checks.append((f"{case}: ours faster than {peer.split()[0]}", f"ours/peer {value:.2f}x", value < 1))
        if (value := ratio(case, "ours no Prefect (threads x2)", OURS)) is not None:
            checks.append((f"{case}: Prefect <= 5% of wall", f"{100 * (1 - value):.1f} %", 1 - value <= 0.05))
    return checks


def draw_chart(results_json: Path, png: Path) -> None:
    """Bar chart (run with the peer venv's python, which has matplotlib): per case, each
    contender's median wall time relative to ours (local x2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(results_json.read_text())
    cases = report["cases"]
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 2.2 * len(cases) + 0.5), squeeze=False)
    for ax, (case, cells) in zip(axes[:, 0], cases.items()):
        ours = [s for s in cells[OURS]["seconds"] if s]
        names, ratios = [], []
        for name, cell in cells.items():
            seconds = [s for s in cell["seconds"] if s]
            if seconds and ours:
                names.append(name)
                ratios.append(statistics.median(seconds) / statistics.median(ours))
        ax.barh(names, ratios, color=["tab:blue" if n.startswith("ours") else "tab:gray" for n in names])
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"{case} ({report['size']}^3)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel("median wall time / ours flow (local x2)   (> 1: ours is faster)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, choices=(256, 512, 1024), default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--contenders", default="", help="comma-separated substrings: only contenders matching one")
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT / "results", help="where results JSON and PNG go")
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT / "data", help="generated volumes (kept between runs)")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_ROOT / "peer-venv", help="separate venv for bioimage-py and matplotlib")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per contender run")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--chart", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        sys.path.insert(0, str(REPO))
        return run_one(json.loads(args.run_one))
    if args.chart:
        return draw_chart(*args.chart)

    cases = [CASES[name] for name in args.cases.split(",") if name]
    wanted = [w.strip().lower() for w in args.contenders.split(",") if w.strip()]
    args.data.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    volumes = make_volumes(args.data, args.size)
    peer_python, peer_modules = peer_venv(args.peer_venv)
    work = Path(tempfile.mkdtemp(prefix="runs-", dir=DEFAULT_ROOT))
    (work / "prefect").mkdir()
    server = PrefectServer(work / "prefect")
    env = os.environ | server.env | {"PREFECT_API_URL": server.url, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    print(f"Prefect server {server.url}; runs in {work}", flush=True)
    results: dict[str, dict[str, Cell]] = {}
    try:
        for case in cases:
            contenders = [c for c in CONTENDERS.values() if c.applies(case) and (c.name == OURS or not wanted
                          or any(w in c.name.lower() for w in wanted))]
            cells = results[case.name] = {c.name: Cell() for c in contenders}
            for contender in contenders:
                if contender.peer and contender.peer not in peer_modules:
                    cells[contender.name].error = f"skipped: {contender.peer} is not installable in the peer venv"
            runnable = [c for c in contenders if not cells[c.name].error]
            for repeat in range(args.repeats):
                shift = repeat % len(runnable)
                for contender in runnable[shift:] + runnable[:shift]:
                    output = work / f"{case.name}-{len(os.listdir(work))}.zarr"
                    request = {"case": case.name, "contender": contender.name, "input": volumes[case.volume],
                               "output": f"{output}/s1"}
                    python = peer_python if contender.peer else sys.executable
                    cell = cells[contender.name]
                    try:
                        seconds, rss = measure(python, env, request, args.timeout)
                        print(f"  {case.name} #{repeat + 1} {contender.name}: {seconds:.2f} s, {rss:.0f} MB", flush=True)
                    except RuntimeError as error:
                        seconds = rss = None
                        cell.error = str(error)
                        print(f"  {case.name} #{repeat + 1} {contender.name}: FAILED {error}", flush=True)
                    cell.seconds.append(seconds)
                    cell.rss_mb.append(rss)
                    shutil.rmtree(output, ignore_errors=True)
            input_mb = args.size**3 * (1 if case.volume == "image" else 4) / 1e6
            print_table(case, cells, input_mb, args.repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    for case in cases:
        print_table(case, results[case.name], args.size**3 * (1 if case.volume == "image" else 4) / 1e6, args.repeats)
    checks = target_checks(results)
    print("\n== targets (paired median ratios)")
    for what, measured, met in checks:
        print(f"{'MET ' if met else 'MISS'} {what:58} {measured}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_json = args.out / f"bench-{args.size}-{stamp}.json"
    results_json.write_text(json.dumps({
        "size": args.size, "repeats": args.repeats, "factor": FACTOR, "chunks": CHUNK, "workers": WORKERS,
        "cases": {case: {name: asdict(cell) for name, cell in cells.items()} for case, cells in results.items()},
        "targets": [{"target": w, "measured": m, "met": ok} for w, m, ok in checks],
    }, indent=1))
    print(f"\nresults: {results_json}")
    if peer_python and "matplotlib" in peer_modules:
        png = results_json.with_suffix(".png")
        chart = subprocess.run([peer_python, str(Path(__file__).resolve()), "--chart", str(results_json), str(png)])
        print(f"chart:   {png}" if chart.returncode == 0 else "chart: failed (see above)")
    else:
        print("chart:   skipped (matplotlib is not available in the peer venv)")


if __name__ == "__main__":
    main()
