"""The contenders of benchmarks/czi.py, each run in a fresh process (`--run-one`): ours
(`bioimage_tasks.convert`), bioio-ome-zarr's `OMEZarrWriter` and bioio-conversion's
`OmeZarrConverter` (in the peer venv), each reporting its wall and CPU seconds; and the floor of
many small stacks (benchmarks/many_floor.py), run the same way."""

from __future__ import annotations

import os
import time
from typing import Any

LEVELS = 3
WORKERS = 2
OURS = "ours convert (threads x2)"
FLOOR = "floor: tifffile, our kernel, tensorstore (no bookkeeping)"


def cpu_now() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended."""
    import resource

    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ours(request: dict[str, Any]) -> dict[str, Any]:
    import bioimage_tasks

    started, cpu = time.perf_counter(), cpu_now()
    report = bioimage_tasks.convert(
        request["input"], request["output"], levels=LEVELS, num_workers=WORKERS
    )
    seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(report.table())
    return {"seconds": seconds, "cpu": cpu_now() - cpu, "groups": [f.output for f in report.files]}


def level_shapes_by_axis(request: dict[str, Any], order: str) -> list[tuple[int, ...]]:
    """Our level shapes (c, z, y, x) in `order` (singleton axes the peer has: 1)."""
    shapes = [dict(zip("czyx", s)) for s in request["shapes"]]
    return [tuple(s.get(a.lower(), 1) for a in order) for s in shapes]


def run_bioio_writer(request: dict[str, Any]) -> dict[str, Any]:
    import dask
    from bioio import BioImage
    from bioio_ome_zarr.writers import OMEZarrWriter

    started, cpu = time.perf_counter(), cpu_now()
    image = BioImage(request["input"])
    data = image.get_image_dask_data("CZYX")
    writer = OMEZarrWriter(
        request["output"],
        level_shapes=level_shapes_by_axis(request, "CZYX"),
        dtype=data.dtype,
        axes_names=list("czyx"),
    )
    with dask.config.set(scheduler="threads", num_workers=WORKERS):
        writer.write_full_volume(data)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": cpu_now() - cpu, "groups": [request["output"]]}


def run_bioio_conversion(request: dict[str, Any]) -> dict[str, Any]:
    from bioio import BioImage
    from bioio_conversion.converters import OmeZarrConverter

    started, cpu = time.perf_counter(), cpu_now()
    order = BioImage(request["input"]).reader.dims.order.upper()
    folder, name = os.path.split(request["output"])
    OmeZarrConverter(
        source=request["input"],
        destination=folder,
        name=name.removesuffix(".ome.zarr"),
        level_shapes=level_shapes_by_axis(request, order),
        n_workers=WORKERS,
    ).convert()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": cpu_now() - cpu, "groups": [request["output"]]}


def floor_pyramid(path: str, output: str, context: Any) -> None:
    """`path`'s stack as `<output>/<name>.ome.zarr`: LEVELS mean levels by our kernel, each a
    zarr v3 array with our chunks and codec written by tensorstore, and a bare group zarr.json."""
    import json

    import tensorstore as ts
    import tifffile

    from bioimage_tasks.kernels.pyramid import pyramid_levels

    data = tifffile.imread(path)
    group = os.path.join(output, os.path.basename(path).split(".")[0] + ".ome.zarr")
    writes = []
    for index, level in enumerate([data, *pyramid_levels(data, [(2, 2, 2)] * LEVELS, "mean")]):
        chunks = [32, 64, 128] if index == 0 else list(level.shape)
        metadata = {
            "shape": list(level.shape),
            "data_type": str(level.dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 0}}],
        }
        spec = {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": f"{group}/s{index}"},
            "metadata": metadata,
        }
        writes.append(ts.open(spec, create=True, context=context).result().write(level))
    for write in writes:
        write.result()
    with open(os.path.join(group, "zarr.json"), "w") as stream:
        json.dump({"zarr_format": 3, "node_type": "group", "attributes": {}}, stream)


def run_floor(request: dict[str, Any]) -> dict[str, Any]:
    """Every stack `request["input"]` (a glob) matches by `floor_pyramid`, WORKERS at a time."""
    import glob
    from concurrent.futures import ThreadPoolExecutor

    import tensorstore as ts
    import tifffile  # noqa: F401 - imported before the clock starts, as run_ours imports ours

    import bioimage_tasks.kernels.pyramid  # noqa: F401

    started, cpu = time.perf_counter(), cpu_now()
    os.makedirs(request["output"])
    context = ts.Context({"file_io_sync": False})
    files = sorted(glob.glob(request["input"]))
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda path: floor_pyramid(path, request["output"], context), files))
    return {"seconds": time.perf_counter() - started, "cpu": cpu_now() - cpu, "groups": []}


CONTENDERS = {
    OURS: (run_ours, False),
    "bioio-ome-zarr write_full_volume (dask x2)": (run_bioio_writer, True),
    "bioio-conversion OmeZarrConverter (2 processes)": (run_bioio_conversion, True),
}
RUNNABLE = CONTENDERS | {FLOOR: (run_floor, False)}  # what `--run-one` runs (the floor: many)
