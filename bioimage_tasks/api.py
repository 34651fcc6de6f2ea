"""The plain API: `downsample`, `copy` and `pyramid` as functions, without Prefect.

Each is a checked operation (`*_operation`: every parameter is validated, naming it, before
anything is created) run by the one engine on the chosen backend (threads, a local Dask cluster,
SLURM or an existing scheduler), with the same resume, block records, leases and budgets as the
Prefect flows, which run the same operations (bioimage_tasks/prefect/flows.py). A builder's
docstring documents the function and the flow made from it; the parameters they share are
documented once, in api_docs.py. `pyramid_operation` is in api_pyramid.py, the checks of the
method and dtype in api_checks.py.

>>> import numpy as np
>>> from bioimage_tasks import downsample
>>> downsample(np.arange(16, dtype=np.uint8).reshape(4, 4), 2, method="mean")
array([[ 2,  4],
       [10, 12]], dtype=uint8)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from bioimage_tasks.api_checks import check_input_dtype, check_method_options
from bioimage_tasks.api_docs import shared_docs
from bioimage_tasks.api_pyramid import pyramid_operation
from bioimage_tasks.backends import backend
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.io import (
    OutputOptions,
    StorageOptions,
    as_source,
    check_output_options,
    physical_of,
)
from bioimage_tasks.io.precomputed_output import precomputed_target
from bioimage_tasks.naming import describe, describe_source
from bioimage_tasks.operations import BlockwiseOperation, Operation, execute
from bioimage_tasks.plain import PlainEdge
from bioimage_tasks.planning import plan_blockwise
from bioimage_tasks.resampling import ResizedSource, WindowedSource
from bioimage_tasks.runners import RunnerConfig, check_backend, describe_backend


def run_plain(operation: Operation) -> Any:
    """Run `operation` on its backend with the plain edge (no Prefect)."""
    with backend(operation.job_type, operation.num_workers, operation.config) as executor:
        return execute(operation, PlainEdge(executor, operation.config.worker_timeout))


def built(builder: Callable[..., Operation], args: tuple, kwargs: dict[str, Any]) -> Operation:
    """`builder(*args, **kwargs)`, keeping the call's parameters on the operation (`call`: a run
    stores them for `verify --repair`)."""
    operation = builder(*args, **kwargs)
    bound = inspect.signature(builder).bind(*args, **kwargs)
    bound.apply_defaults()
    operation.call = dict(bound.arguments)
    return operation


def plain(builder: Callable[..., Operation], returns: str) -> Callable[..., Any]:
    """The plain function of an operation builder: its parameters and documentation (a builder's
    docstring documents this function), returning what the run returns (`returns`)."""

    @functools.wraps(builder)
    def call(*args: Any, **kwargs: Any) -> Any:
        return run_plain(built(builder, args, kwargs))

    call.__name__ = call.__qualname__ = builder.__name__.removesuffix("_operation")
    call.__module__ = __name__  # found (pickle, docs) where it is defined: here
    call.__signature__ = inspect.signature(builder).replace(return_annotation=returns)
    del call.__wrapped__  # so that tools (inspect.unwrap, the API reference) stop here
    return call


def blockwise_operation(
    kind: str,
    source: Any,
    input: Any,
    output: Any,
    details: dict[str, Any],
    *,
    block_shape: Any,
    job_type: str,
    job_config: Any,
    num_workers: int,
    mask: Any,
    block_ids: Any,
    resume_from: Any,
    output_options: Any,
    storage_options: Any,
) -> BlockwiseOperation:
    """The checked one-stage operation writing `source` (a view of `input`) into `output`."""
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    plan = plan_blockwise(
        source,
        output,
        mask=mask,
        block_shape=block_shape,
        block_ids=block_ids,
        resume_from=resume_from,
        job_type=job_type,
        memory_budget=config.memory_budget,
        output_options=options,
        storage_options=storage_options,
    )
    details = {
        "input": describe_source(input, getattr(source, "source", source)),
        **details,
        "mask": describe(mask) if mask is not None else "none",
        "backend": describe_backend(job_type, num_workers),
    }
    if options != OutputOptions():
        details["output options"] = options.describe()
    return BlockwiseOperation(kind, plan, config, num_workers, details, job_type)


@shared_docs
def downsample_operation(
    input: Any,
    scale_factor: int | Sequence[int],
    output: Any = None,
    *,
    order: int = 0,
    anti_aliasing: bool = False,
    method: str = "resize",
    block_shape: Sequence[int] | None = None,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    mask: Any = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> BlockwiseOperation:
    """Downsample `input` by `scale_factor`, block by block, exactly.

    Shrinks a volume larger than memory to `downscale_shape(shape, scale_factor)` (ceil mode:
    a partial window at the edge still counts), the same result as the whole-array reference
    would give: `method="resize"` equals scikit-image's `resize(x, shape, order,
    anti_aliasing=..., mode="reflect", preserve_range=True)` cast back to the input dtype
    (integers rounded to nearest), and the window methods equal tensorstore's `downsample`
    driver. Blocks run on the chosen backend; a run that stops part-way resumes where it
    stopped when the same call runs again.

    Parameters
    ----------
    %(input)s
    scale_factor : int or sequence of int
        Reduction per axis: one int >= 1 for every axis, or one per axis (`(1, 2, 2)` keeps
        the first axis).
    %(output)s
    %(order)s
    %(anti_aliasing)s
    method : {"resize", "mean", "mode", "min", "max", "median", "stride"}, default "resize"
        `"resize"` resamples (with `order` and `anti_aliasing`); the others reduce each window
        of `scale_factor` voxels to one: its mean, most frequent value (label-safe), minimum,
        maximum, median, or first voxel (`"stride"`). Window methods take bool, integer and
        float inputs; `"resize"` takes complex ones too. The default, resize of order 0
        without anti-aliasing, picks input voxels and never mixes them: safe for labels.
    %(block_shape)s
    %(job_type)s
    %(job_config)s
    %(num_workers)s
    %(mask)s
    %(block_ids)s
    %(resume_from)s
    %(output_options)s
    %(storage_options)s

    Returns
    -------
    numpy.ndarray | zarr.Array | tensorstore.TensorStore
        The output: a numpy array when `output` is None, else the array written (a
        `zarr.Array` for zarr, a `tensorstore.TensorStore` for n5 and object storage).

    Raises
    ------
    %(raises)s

    See Also
    --------
    downsample_flow : the same run as a Prefect flow.
    pyramid : every level of an OME-Zarr multiscale image in one run.

    Examples
    --------
    >>> import numpy as np
    >>> import bioimage_tasks as bt
    >>> image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> bt.downsample(image, 2, method="mean")
    array([[ 2,  4],
           [10, 12]], dtype=uint8)
    >>> bt.downsample(image, 2)  # resize, order 0: input voxels, label-safe
    array([[ 5,  7],
           [13, 15]], dtype=uint8)

    Into a zarr array, created block by block, halving the last axis only:

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> out = bt.downsample(image, (1, 2), f"{folder.name}/out.zarr/half", method="max")
    >>> out.shape, out[:2].tolist()
    ((4, 2), [[1, 3], [5, 7]])
    >>> folder.cleanup()
    """
    check_method_options(method, order, anti_aliasing)
    source = as_source(input, storage_options=storage_options)
    factors = normalize_factors(scale_factor, len(source.shape))
    check_input_dtype(source.dtype, method, order, anti_aliasing)
    if method == "resize":
        view = ResizedSource(source, downscale_shape(source.shape, factors), order, anti_aliasing)
    else:
        view = WindowedSource(source, factors, method)
    details = {
        "scale factor": factors,
        "method": f"{method}, order {order}, anti-aliasing {anti_aliasing}",
    }
    return blockwise_operation(
        "downsample",
        view,
        input,
        output,
        details,
        block_shape=block_shape,
        job_type=job_type,
        job_config=job_config,
        num_workers=num_workers,
        mask=mask,
        block_ids=block_ids,
        resume_from=resume_from,
        output_options=output_options,
        storage_options=storage_options,
    )


@shared_docs
def copy_operation(
    input: Any,
    output: Any = None,
    *,
    block_shape: Sequence[int] | None = None,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    mask: Any = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> BlockwiseOperation:
    """Copy `input` into `output`, block by block.

    Converts between formats (TIFF, HDF5, microscopy files, zarr v2/v3, n5, neuroglancer
    precomputed, object storage) without holding the volume in memory, optionally inside a
    `mask` or into a new layout (`output_options`: codec, shards). A run that stops part-way
    resumes where it stopped when the same call runs again.

    Parameters
    ----------
    %(input)s
    output : zarr.Array | tensorstore.TensorStore | str | os.PathLike | None, default None
        Where the copy goes: an array, or a path or URL (`"path/out.zarr/key"`,
        `"path/out.n5/key"`, `"s3://bucket/out.zarr/key"`). A missing path is created (zarr v3,
        zarr v2 inside a v2 container, or n5, as the path says) with chunks of about 64**3
        voxels; an existing array must have the input's shape and a dtype that holds it.
        `"precomputed://folder"` writes a single-scale neuroglancer volume with the input's
        voxel size in nm. None: the copy is returned as a numpy array (`job_type="local"`
        only).
    %(block_shape)s
    %(job_type)s
    %(job_config)s
    %(num_workers)s
    %(mask)s
    %(block_ids)s
    %(resume_from)s
    %(output_options)s
    %(storage_options)s

    Returns
    -------
    numpy.ndarray | zarr.Array | tensorstore.TensorStore
        The output: a numpy array when `output` is None, else the array written (a
        `zarr.Array` for zarr, a `tensorstore.TensorStore` for n5, precomputed and object
        storage).

    Raises
    ------
    %(raises)s

    See Also
    --------
    copy_flow : the same run as a Prefect flow.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import bioimage_tasks as bt
    >>> image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> folder = tempfile.TemporaryDirectory()
    >>> out = bt.copy(image, f"{folder.name}/copy.zarr/raw", mask=image > 5)
    >>> out[:]
    array([[ 0,  0,  0,  0],
           [ 0,  0,  6,  7],
           [ 8,  9, 10, 11],
           [12, 13, 14, 15]], dtype=uint8)

    Into n5 with gzip at level 9, from the zarr array just written:

    >>> n5 = bt.copy(f"{folder.name}/copy.zarr/raw", f"{folder.name}/copy.n5/raw",
    ...              output_options={"codec": "gzip", "level": 9})
    >>> int(n5.read().result().sum())
    105
    >>> folder.cleanup()
    """
    source = as_source(input, storage_options=storage_options)
    output = precomputed_target(
        output, physical_of(source), storage_options
    )  # a single-scale volume
    return blockwise_operation(
        "copy",
        source,
        input,
        output,
        {},
        block_shape=block_shape,
        job_type=job_type,
        job_config=job_config,
        num_workers=num_workers,
        mask=mask,
        block_ids=block_ids,
        resume_from=resume_from,
        output_options=output_options,
        storage_options=storage_options,
    )


downsample = plain(downsample_operation, "numpy.ndarray | zarr.Array | tensorstore.TensorStore")
copy = plain(copy_operation, "numpy.ndarray | zarr.Array | tensorstore.TensorStore")
pyramid = plain(pyramid_operation, "str")
