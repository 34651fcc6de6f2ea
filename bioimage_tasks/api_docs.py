"""The documentation of the parameters the public functions share, written once.

The docstrings of `downsample`, `copy` and `pyramid` (and so of their flows, which take their
docstrings) hold lines such as ``%(job_type)s``; `shared_docs` replaces each such line by the
entry of that name in `SHARED`, indented like the line, when the module is imported. `help()`,
IDEs and the API reference (mkdocstrings, numpy style) show the result.

>>> @shared_docs
... def f(num_workers=1):
...     '''Do f.
...
...     Parameters
...     ----------
...     %(num_workers)s
...     '''
>>> print(f.__doc__.splitlines()[4])
    num_workers : int, default 1
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

Documented = TypeVar("Documented", bound=Callable)

PLACEHOLDER = re.compile(r"( *)%\((\w+)\)s")

SHARED: dict[str, str] = {
    "input": """\
input : numpy.ndarray | zarr.Array | tensorstore.TensorStore | str | os.PathLike
    The volume to read, block by block (never whole): an array object, or a path or URL that
    names one: `"path/container.zarr/key"` (zarr v2 or v3), `"path/container.n5/key"`, an
    OME-Zarr image `"image.ome.zarr"` (its level 0, with its voxel size), a TIFF file, a folder
    or glob of 2-D slices (`"slices/*.tif"`), `"file.h5/dataset"`, a microscopy file
    (`"file.czi/<scene>"`, ND2, LIF through bioio), `"precomputed://folder"` (neuroglancer), or
    `"s3://bucket/path/container.zarr/key"` (read-only: `"https://..."`). Backends other than
    `"local"` need data they can open themselves: a path or URL, not a numpy array.""",
    "output": """\
output : zarr.Array | tensorstore.TensorStore | str | os.PathLike | None, default None
    Where the result goes: an array, or a path or URL (`"path/out.zarr/key"`,
    `"path/out.n5/key"`, `"s3://bucket/out.zarr/key"`). A missing path is created (zarr v3,
    zarr v2 inside a v2 container, or n5, as the path says) with chunks of about 64**3 voxels;
    an existing array must have the result's shape and a dtype that holds it, and must not be
    the input. None: the result is returned as a numpy array (`job_type="local"` only).""",
    "order": """\
order : int, default 0
    Spline order of `method="resize"`, 0 to 5 (0: nearest voxel, label-safe; 1: linear;
    3: cubic). Window methods take only 0.""",
    "anti_aliasing": """\
anti_aliasing : bool, default False
    Gaussian smoothing before `method="resize"` samples, as scikit-image's `resize` does
    (sigma `(factor - 1) / 2` per axis). Window methods take only False.""",
    "block_shape": """\
block_shape : sequence of int, optional
    Shape of the blocks the output is cut into, in output voxels, one int >= 1 per axis. Blocks
    need not align with the output's chunks: blocks that share a chunk or shard are written by
    one task, in turn. None (the default): a multiple of the output's chunk (or shard) of about
    64**3 voxels, shrunk until a block fits `job_config.memory_budget`.""",
    "job_type": """\
job_type : {"local", "subprocess", "slurm", "dask"}, default "local"
    Where the blocks run: `"local"`, threads in this process; `"subprocess"`, a Dask
    LocalCluster of worker processes on this machine; `"slurm"`, Dask workers as SLURM jobs
    (dask-jobqueue); `"dask"`, an existing Dask scheduler. Every backend runs the same batches
    with the same resume and records; all but `"local"` need file-backed input and output.""",
    "job_config": """\
job_config : RunnerConfig | LocalClusterConfig | SlurmConfig | DaskConfig | dict | None
    Settings of the backend, of the type that matches `job_type` (`RunnerConfig` for
    `"local"`, `LocalClusterConfig`, `SlurmConfig`, `DaskConfig`), or a dict of its fields
    (as a deployment passes JSON). Every type holds what all backends share: `memory_budget`
    (bytes one worker holds for a block), `blocks_per_task`, `worker_timeout`, `write_limit`
    (a Prefect global concurrency limit), and, for flows, `retries`, `retry_delay` and
    `result_storage`. None: the type's defaults (a `DaskConfig` needs its `address`).""",
    "num_workers": """\
num_workers : int, default 1
    How many work at once: threads for `"local"`, worker processes for `"subprocess"`, SLURM
    jobs at most for `"slurm"` (adaptive), workers planned for on an existing `"dask"`
    scheduler. An integer >= 1.""",
    "mask": """\
mask : numpy.ndarray | zarr.Array | str | os.PathLike | None, default None
    An array of the output's shape (or a path or URL naming one, like `input`'s), nonzero where
    voxels are to be written: blocks it leaves empty are skipped, and a partly masked block
    keeps the output's values outside it. None: every voxel is written.""",
    "block_ids": """\
block_ids : sequence of int, optional
    Write only these blocks, by their C-order index in the output's grid of blocks (a
    `BlocksFailedError` lists the failed ones): sorted, unique, each in `[0, n_blocks)`. They
    are rewritten even if recorded done. Cannot be combined with `resume_from`. None: every
    block.""",
    "resume_from": """\
resume_from : str | os.PathLike | None, default None
    The failed run to resume into the same, existing output: its Prefect flow run id, or its
    block-record folder (the error of the failed run prints it). The run is refused if the
    records are of another computation. Not needed to resume: re-running the same call skips
    every block recorded done with today's input, and writes the others.""",
    "output_options": """\
output_options : OutputOptions | dict | None, default None
    How outputs the run creates are stored (`OutputOptions` or a dict of its fields): `codec`
    ("zstd", "blosc-lz4", "gzip") and its `level`, zarr v3 `shards`, and
    `write_empty_chunks` (store chunks equal to the fill value; default False). None: zstd for
    zarr, gzip for n5, no shards.""",
    "storage_options": """\
storage_options : StorageOptions | dict | None, default None
    How to reach paths on object storage (`StorageOptions` or a dict of its fields):
    `endpoint_url`, `region`, `profile`, `anonymous`. Credentials come from each process's
    environment or `~/.aws/credentials`, never from parameters. None: the endpoint and region
    from `AWS_ENDPOINT_URL` and `AWS_REGION`.""",
    "raises": """\
ParameterError
    A parameter, or the data it names, cannot be used; the message names the parameter.
    Raised before anything is created or written. It is a `ValueError`. A parameter of the
    wrong type raises `TypeError`, an input that does not exist `FileNotFoundError`.
StorageError
    An object-storage endpoint does not answer when a URL is first opened; raised before
    anything is written.
BlocksFailedError
    Some blocks failed (in a flow, after their retries); the others are written. It names the
    failed block ids and the first errors; re-run the same call to write only what is
    missing.
NoWorkersError
    A Dask backend has had no worker for `job_config.worker_timeout` seconds.""",
}


def fill(doc: str | None) -> str | None:
    """`doc` with each placeholder line (``%(name)s`` alone on its line) replaced by the entry
    `name` of `SHARED`, indented as that line was; other lines are left as they are."""
    if doc is None:  # python -OO strips docstrings
        return None
    lines = []
    for line in doc.split("\n"):
        found = PLACEHOLDER.fullmatch(line)
        if found is None:
            lines.append(line)
            continue
        indent, name = found.groups()
        lines.extend(indent + text if text else text for text in SHARED[name].split("\n"))
    return "\n".join(lines)


def shared_docs(function: Documented) -> Documented:
    """Decorator: `function`'s docstring with its placeholders filled in (see the module)."""
    function.__doc__ = fill(function.__doc__)
    return function
