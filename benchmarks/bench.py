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
PEER_PACKAGES = {
    "bioimage_py": ["bioimage-py==0.2.2", "zarr>=3.1,<3.2"],
    "matplotlib": ["matplotlib"],
}
OURS = "ours flow (local x2)"
GENERATED_UP_TO = 512  # larger volumes are mirror-tiled from the 512^3 ones (make_volumes)
# a whole-array contender runs only if its estimated peak fits in this share of MemAvailable
MEMORY_SHARE = 0.8
SCALING_LIMIT = (
    1.2  # --compare: peak RSS ratio and seconds-per-voxel ratio allowed between two sizes
)


# --------------------------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Case:
    """One downsample of one volume: `method` "resize" (with `order`, `anti_aliasing`) or a window
    method."""

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
    # Contenders that hold the whole volume in memory: their peak RSS (MB) measured at 512^3, which
    # scaled by the voxel count estimates the peak at other sizes (None: memory does not grow with
    # it)
    peak_mb_at_512: Callable[[Case], float] | None = None

    def estimated_peak_mb(self, case: Case, size: int) -> float | None:
        return (
            None if self.peak_mb_at_512 is None else self.peak_mb_at_512(case) * (size / 512) ** 3
        )


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
    return zarr.create_array(
        store=store, name=key, shape=shape, dtype=dtype, chunks=(CHUNK,) * len(shape), fill_value=0
    )


SETTLE_SECONDS = 3.0


def warm_up_prefect(case: Case) -> None:
    """One tiny untimed flow call: the process's first flow call pays Prefect's client and flow
    registration set-up, which is per process, not per volume. Then SETTLE_SECONDS for the server
    to store the warm-up's task-run events and log batches (sent every 2 s): on the default
    SQLite database, a flow run created while those writes land can get "database is locked"
    (HTTP 503), which Prefect's client retries after 2 s. A user's first call has no warm-up
    before it, so that stall would be the benchmark's own."""
    import numpy as np

    from flows import downsample_flow

    downsample_flow(np.zeros((8, 8, 8), np.uint8), FACTOR, **case.flow_kwargs)
    time.sleep(SETTLE_SECONDS)


def warm_up_plain(case: Case) -> None:
    """One tiny untimed plain call: loads the compiled kernels from numba's cache (per process),
    as the flow contenders' warm-up does."""
    import numpy as np

    from bioimage_tasks import downsample

    downsample(np.zeros((8, 8, 8), np.uint8), FACTOR, **case.flow_kwargs)


def run_ours_flow(job_type: str) -> Callable[[Case, str, str], None]:
    def run(case: Case, source: str, output: str) -> None:
        from flows import downsample_flow

        downsample_flow(
            source, FACTOR, output, job_type=job_type, num_workers=WORKERS, **case.flow_kwargs
        )

    return run


def run_ours_pure(case: Case, source: str, output: str) -> None:
    """The plain API (no Prefect): the same operation and engine as the flow, on 2 threads."""
    from bioimage_tasks import downsample

    downsample(source, FACTOR, output, num_workers=WORKERS, **case.flow_kwargs)


def ts_spec(path: str) -> dict[str, Any]:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}


def ts_create(path: str, like: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A new tensorstore zarr3 array with 64^3 chunks and the same codecs as `like`'s zarr.json."""
    import tensorstore as ts

    codecs = like.spec().to_json().get("metadata", {}).get("codecs")
    metadata: dict[str, Any] = {
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [CHUNK] * len(shape)}}
    }
    if codecs:
        metadata["codecs"] = codecs
    return ts.open(
        ts_spec(path) | {"metadata": metadata},
        create=True,
        delete_existing=True,
        dtype=dtype,
        shape=shape,
    ).result()


def run_tensorstore(case: Case, source: str, output: str) -> None:
    """tensorstore's downsample driver (order 0 = stride after dropping the first voxel, which is
    what scikit-image's centre-aligned order 0 picks at an even factor)."""
    import tensorstore as ts

    src = ts.open(ts_spec(source), read=True).result()
    if case.is_order0:
        view = ts.downsample(
            src[(slice(1, None),) * src.rank].translate_to[0], [FACTOR] * src.rank, "stride"
        )
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
    y = resize(
        x,
        output_shape(x.shape),
        order=case.order,
        anti_aliasing=case.anti_aliasing,
        mode="reflect",
        preserve_range=True,
    )
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
    bioimage_py.downsample(
        x,
        FACTOR,
        out,
        order=case.order,
        anti_aliasing=case.anti_aliasing,
        block_shape=(CHUNK,) * x.ndim,
        job_type="local",
        num_workers=WORKERS,
    )


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


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the forking parent's peak over
    exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def settle_disk() -> None:
    """Write back every dirty page before a clock starts: earlier runs and the untimed preparation
    leave dirty pages (zarr-python writes without fsync), which the kernel would write back 30 s
    later, in the middle of whichever contender runs then."""
    os.sync()


def read_through(path: Path) -> None:
    """Read `path` once, untimed, so that it is in the page cache for every run: otherwise the
    first contender alone reads it from disk (measured: 12.8 s against 7.2 s for the same run)."""
    with open(path, "rb") as file:
        while file.read(2**24):
            pass


def run_one(request: dict[str, Any]) -> None:
    """Child process entry: prepare (untimed), time the work, print one RESULT line."""
    case, contender = CASES[request["case"]], CONTENDERS[request["contender"]]
    for module in contender.imports:
        importlib.import_module(module)
    contender.prepare(case)
    settle_disk()
    started = time.perf_counter()
    seconds = contender.run(case, request["input"], request["output"])
    elapsed = time.perf_counter() - started
    print(
        RESULT_TAG
        + json.dumps(
            {
                "seconds": seconds if isinstance(seconds, float) else elapsed,
                "self_rss_mb": peak_rss_mb(),
            }
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# Orchestration (parent process)


@dataclass
class Cell:
    """Results of one contender on one case, one entry per repeat (None where a run failed);
    `skipped` says why it was not run at all (then both lists are empty)."""

    seconds: list[float | None] = field(default_factory=list)
    rss_mb: list[float | None] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None


class TreeRssSampler(threading.Thread):
    """Peak summed RSS of a process and all its descendants, sampled every 50 ms; with
    `limit_bytes`, the whole tree is SIGKILLed once its RSS exceeds it (`killed_at` says when)."""

    def __init__(self, pid: int, limit_bytes: float | None = None):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.limit_bytes = limit_bytes
        self.killed_at: int | None = None
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
                if self.limit_bytes is not None and total > self.limit_bytes:
                    self.killed_at = total
                    for member in reversed(members):
                        try:
                            member.kill()
                        except psutil.Error:
                            pass
                    return
            except psutil.Error:
                return
            self.stopped.wait(0.05)


def make_volumes(
    data_dir: Path, size: int, names: tuple[str, ...] = ("image", "labels")
) -> dict[str, str]:
    """The SIZE^3 uint8 image and uint32 labels (or those of `names`) as zarr v3, 64^3 chunks,
    generated once per size: by `sample_data` up to 512^3, mirror-tiled from the 512^3 volumes
    above (`sample_data` needs tens of GB at 1024^3). Written under a temporary name and renamed
    when complete, so an interrupted generation is redone, not used."""
    import zarr

    from bioimage_tasks.sample_data import blob_labels, smooth_image

    shape = (size,) * 3
    store = data_dir / f"volumes-{size}.zarr"
    tiles = make_volumes(data_dir, GENERATED_UP_TO, names) if size > GENERATED_UP_TO else None
    paths = {}
    for name, make in (
        (n, m) for n, m in (("image", smooth_image), ("labels", blob_labels)) if n in names
    ):
        path = f"{store}/{name}"
        if (
            not (store / name / "zarr.json").exists()
            or zarr.open_array(str(store), path=name).shape != shape
        ):
            partial = f"{name}.partial"
            shutil.rmtree(store / partial, ignore_errors=True)
            started = time.perf_counter()
            if tiles:
                print(f"generating {path} (mirror-tiled from {tiles[name]}) ...", flush=True)
                mirror_tile(tiles[name], store, partial, size)
            else:
                print(f"generating {path} ...", flush=True)
                values = make(shape)
                zarr.create_array(
                    store=str(store),
                    name=partial,
                    shape=shape,
                    dtype=values.dtype,
                    chunks=(CHUNK,) * 3,
                )[:] = values
                del values
            shutil.rmtree(store / name, ignore_errors=True)
            os.replace(store / partial, store / name)
            print(
                f"  {time.perf_counter() - started:.0f} s, {disk_mb(store / name):.0f} MB on disk",
                flush=True,
            )
        paths[name] = path
    return paths


def mirror_index(size: int, n: int) -> Any:
    """Source index of each of `size` positions when a length-n axis is tiled by mirroring:
    0..n-1, n-1..0, 0..n-1, ... (each seam repeats its voxel, so the volume stays smooth)."""
    import numpy as np

    position = np.arange(size) % (2 * n)
    return np.where(position < n, position, 2 * n - 1 - position)


def mirror_tile(source: str, store: Path, name: str, size: int) -> None:
    """A size^3 array `name` in `store` filled from the n^3 volume at `source` by mirror-tiling
    (for 1024 from 512: each octant is the volume flipped along the axes on which the octant is
    the upper half). Written in blocks of 64 x n x n, so the peak is about one n^3 volume."""
    import numpy as np
    import zarr

    container, key = split_path(source)
    tile = zarr.open_array(container, path=key, mode="r")[:]
    n = tile.shape[0]
    index = mirror_index(size, n)
    out = zarr.create_array(
        store=str(store), name=name, shape=(size,) * 3, dtype=tile.dtype, chunks=(CHUNK,) * 3
    )
    for z in range(0, size, CHUNK):
        for y in range(0, size, n):
            for x in range(0, size, n):
                block = (slice(z, z + CHUNK), slice(y, y + n), slice(x, x + n))
                out[block] = tile[np.ix_(*(index[b] for b in block))]


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def peer_venv(
    path: Path, packages: dict[str, list[str]] = PEER_PACKAGES
) -> tuple[str | None, set[str]]:
    """The separate venv for peers that must not touch our pinned environment: created on first
    use, and `packages` ({module: pip requirements}) whose module does not import there are
    installed; returns its python (None if it cannot be made) and which modules import there."""
    python = path / "bin" / "python"

    def importable(module: str) -> bool:
        return (
            subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode
            == 0
        )

    if not python.exists():
        print(f"creating the peer venv {path} ...", flush=True)
        if (
            subprocess.run(
                [shutil.which("python3") or sys.executable, "-m", "venv", "--clear", str(path)]
            ).returncode
            != 0
        ):
            print(
                f"!! could not create the peer venv {path}: the peers and the chart are skipped",
                flush=True,
            )
            return None, set()
    for module, requirements in packages.items():
        if importable(module):
            continue
        print(f"installing {' '.join(requirements)} into {path} ...", flush=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *requirements],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            print(
                f"!! pip install {' '.join(requirements)} failed in {path}:\n"
                f"{install.stderr.strip()[-2000:]}",
                flush=True,
            )
    available = {module for module in packages if importable(module)}
    for module, requirements in packages.items():
        if module not in available:
            print(
                f"!! {requirements[0]} is not available in {path}; its part of the benchmark is "
                f"skipped (the install is retried on the next run)",
                flush=True,
            )
    return str(python), available


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prefect_server_command(port: int) -> list[str]:
    """`prefect server start` on loopback `port`, run by this Python."""
    where = ["--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-m", "prefect", "server", "start", *where]


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float = 180) -> bool:
    """Whether the server `process` at API `url` answered /health within `seconds` (False at once
    if it exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except OSError:
            if process.poll() is not None:
                return False
            time.sleep(0.5)
    return False


class PrefectServer:
    """One `prefect server start` on a free loopback port for the whole benchmark, so no flow call
    pays an ephemeral server's start-up; PREFECT_HOME is a temporary folder."""

    def __init__(self, home: Path):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        self.env = {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        self.log = open(home / "server.log", "w")
        self.process = subprocess.Popen(
            prefect_server_command(port),
            env=os.environ | self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if not wait_until_healthy(self.url, self.process):
            self.stop()
            raise RuntimeError(f"the Prefect server did not start; see {home / 'server.log'}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class RunSpace:
    """A temporary folder under DEFAULT_ROOT for the runs' outputs, one PrefectServer for the whole
    benchmark, and the environment every child run gets (that server, this checkout first on the
    path, one OpenMP thread)."""

    def __init__(self, prefix: str):
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=DEFAULT_ROOT))
        (self.work / "prefect").mkdir()
        self.server = PrefectServer(self.work / "prefect")
        self.env = (
            os.environ
            | self.server.env
            | {"PREFECT_API_URL": self.server.url, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        )

    def output(self, label: str, suffix: str = ".zarr") -> Path:
        """A new output path in the work folder (numbered by what the folder holds now)."""
        return self.work / f"{label}-{len(os.listdir(self.work))}{suffix}"

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def wanted_names(option: str) -> list[str]:
    """The lower-cased substrings of a comma-separated --contenders option."""
    return [w.strip().lower() for w in option.split(",") if w.strip()]


def selected(name: str, wanted: list[str]) -> bool:
    """Whether contender `name` matches one of the --contenders substrings (all do if none)."""
    return not wanted or any(w in name.lower() for w in wanted)


def rotation(names: list[Any], repeat: int) -> list[Any]:
    """The run order in `repeat`: contenders alternate, the first one moving back each repeat."""
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def mem_available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


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


def measure(
    python: str, env: dict[str, str], request: dict[str, Any], timeout: float
) -> tuple[float, float]:
    """Run one contender in a fresh process; (seconds, peak tree RSS MB). Raises on failure."""
    result, rss_mb = run_child(python, env, request, timeout)
    return result["seconds"], rss_mb


def run_child(
    python: str,
    env: dict[str, str],
    request: dict[str, Any],
    timeout: float,
    script: Path = Path(__file__).resolve(),
    max_rss_mb: float | None = None,
) -> tuple[dict[str, Any], float]:
    """Run `script --run-one REQUEST` in a fresh process: (its last RESULT line, peak tree RSS MB).
    Raises RuntimeError on failure, on timeout, or when the tree's RSS exceeded `max_rss_mb`
    (then the tree was killed: "killed at X GB")."""
    child = subprocess.Popen(
        [python, str(script), "--run-one", json.dumps(request)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    sampler = TreeRssSampler(child.pid, None if max_rss_mb is None else max_rss_mb * 2**20)
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
    if sampler.killed_at is not None:
        raise RuntimeError(
            f"killed at {sampler.killed_at / 2**30:.2f} GB (--max-rss {max_rss_mb / 1024:.2f} GB)"
        )
    results = [
        line[len(RESULT_TAG) :] for line in stdout.splitlines() if line.startswith(RESULT_TAG)
    ]
    if child.returncode != 0 or not results:
        raise RuntimeError(
            f"exit {child.returncode}: "
            f"{stderr.strip().splitlines()[-1] if stderr.strip() else stdout[-500:]}"
        )
    result = json.loads(results[-1])
    return result, max(sampler.peak / 2**20, result["self_rss_mb"])


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


Check = tuple[str, str, bool | None]  # (what, measured, met); met None: not measured
TENSORSTORE_LIMITS = {  # ours / tensorstore downsample, per case
    "order0-image": 1.3,
    "order0-labels": 1.3,
    "stride-image": 1.3,
    "stride-labels": 1.3,
    "mean-image": 1.3,
    "mode-labels": 1.5,
}
SKIMAGE = "skimage resize (whole array)"
BIOIMAGE_PY = "bioimage-py 0.2.2 (local x2)"


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


def ratio_or_none(results: dict[str, dict[str, Cell]], case: str, a: str, b: str) -> float | None:
    cells = results.get(case, {})
    values = paired_ratios(cells[a], cells[b]) if a in cells and b in cells else []
    return statistics.median(values) if values else None


def verdict(met: bool | None) -> str:
    return "--  " if met is None else "MET " if met else "MISS"


def draw_chart(results_json: Path, png: Path, ours: str = OURS) -> None:
    """Bar chart (run with the peer venv's python, which has matplotlib): per case, each
    contender's median wall time relative to `ours`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(results_json.read_text())
    cases = report["cases"]
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 2.2 * len(cases) + 0.5), squeeze=False)
    for ax, (case, cells) in zip(axes[:, 0], cases.items()):
        ours_seconds = [s for s in cells[ours]["seconds"] if s]
        names, ratios = [], []
        for name, cell in cells.items():
            seconds = [s for s in cell["seconds"] if s]
            if seconds and ours_seconds:
                names.append(name)
                ratios.append(statistics.median(seconds) / statistics.median(ours_seconds))
        ax.barh(
            names, ratios, color=["tab:blue" if n.startswith("ours") else "tab:gray" for n in names]
        )
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"{case} ({report['size']}^3)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel(f"median wall time / {ours}   (> 1: ours is faster)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def compare_sizes(paths: list[Path], ours: str = OURS) -> None:
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


def chart(peer_python: str, script: Path, results_json: Path) -> None:
    """The PNG bar chart next to `results_json`, drawn by `script --chart` in the peer venv."""
    png = results_json.with_suffix(".png")
    drawn = subprocess.run([peer_python, str(script), "--chart", str(results_json), str(png)])
    print(f"chart:   {png}" if drawn.returncode == 0 else "chart: failed (see above)")


def add_case_arguments(
    parser: argparse.ArgumentParser, cases: dict[str, Case], default_size: int
) -> None:
    """--size, --repeats and --cases (a subset of `cases`)."""
    parser.add_argument("--size", type=int, choices=(256, 512, 1024), default=default_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cases", default=",".join(cases), help=f"comma-separated subset of {', '.join(cases)}"
    )


def add_child_arguments(parser: argparse.ArgumentParser, timeout: float, data_help: str) -> None:
    """--max-rss, --timeout, --out, --data and --peer-venv of scripts whose contenders run by
    `run_child` with a memory limit."""
    parser.add_argument(
        "--max-rss",
        type=float,
        default=8.0,
        help="GB: a contender's process tree above it is killed",
    )
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per contender run")
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT / "results")
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT / "data", help=data_help)
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_ROOT / "peer-venv")


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
    """One contender run (`measure`): its seconds and peak RSS, or None and the error, appended to
    `cell` and printed; its output is removed."""
    try:
        seconds, rss = measure(python, env, request, timeout)
        print(f"  {label}: {seconds:.2f} s, {rss:.0f} MB", flush=True)
    except RuntimeError as error:
        seconds = rss = None
        cell.error = str(error)
        print(f"  {label}: FAILED {error}", flush=True)
    cell.seconds.append(seconds)
    cell.rss_mb.append(rss)
    shutil.rmtree(Path(request["output"]).parent, ignore_errors=True)


def main() -> None:
    args = parse_args()
    if args.run_one:
        sys.path.insert(0, str(REPO))
        return run_one(json.loads(args.run_one))
    if args.chart:
        return draw_chart(*args.chart)
    if args.compare is not None:
        return compare_sizes(args.compare or sorted(args.out.glob("bench-*.json")))

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
