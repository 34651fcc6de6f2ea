"""bench.py's case and its contenders' work: each `run_*(case, input, output)` downsamples one
zarr volume, inside the child process. Imports are local, so the peer venv, which has neither
bioimage_tasks nor tensorstore's pinned version, can import this file."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench_runs import SETTLE_SECONDS
from bench_volumes import CHUNK, split_path

FACTOR = 2
WORKERS = 2
OURS = "ours flow (local x2)"
SKIMAGE = "skimage resize (whole array)"
BIOIMAGE_PY = "bioimage-py 0.2.2 (local x2)"


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


def output_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(s / FACTOR) for s in shape)


def create_zarr(path: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """An empty zarr v3 array at 'dir/x.zarr/key' with 64^3 chunks and zarr's default codec."""
    import zarr

    store, key = split_path(path)
    return zarr.create_array(
        store=store, name=key, shape=shape, dtype=dtype, chunks=(CHUNK,) * len(shape), fill_value=0
    )


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
