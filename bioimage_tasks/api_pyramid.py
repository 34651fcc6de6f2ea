"""The plain API's `pyramid`: the checked operation writing an OME-Zarr multiscale image (or a
neuroglancer precomputed volume), every parameter validated, naming it, before anything is
created. Its docstring documents `bioimage_tasks.pyramid` and `pyramid_flow` (api.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bioimage_tasks.api_checks import check_input_dtype, check_label_options, check_method_options
from bioimage_tasks.api_docs import shared_docs
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io import OutputOptions, StorageOptions, as_source, check_output_options
from bioimage_tasks.naming import describe_source
from bioimage_tasks.planning import in_memory
from bioimage_tasks.pyramid_checks import check_chunks_and_shards, pyramid_geometry
from bioimage_tasks.pyramid_formats import precomputed_output
from bioimage_tasks.pyramid_levels import group_output_path, level_spec, region_plan, reuses_s0
from bioimage_tasks.pyramid_op import PyramidOperation
from bioimage_tasks.runners import RunnerConfig, check_backend, describe_backend

S0_ALONE = "s0 alone: no level below it (levels=0 or scale_factors=[])"


@shared_docs
def pyramid_operation(
    input: Any,
    output_group: str,
    *,
    levels: int | None = None,
    scale_factors: Sequence[int | Sequence[int]] | None = None,
    method: str = "mean",
    order: int = 0,
    anti_aliasing: bool = False,
    voxel_size: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    axes: Sequence[str] | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    ngff_version: str = "0.5",
    name: str | None = None,
    labels: bool = False,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> PyramidOperation:
    """Write `input` as an OME-Zarr multiscale image: s0 and every downsampled level, in one run.

    Builds the pyramid a viewer needs (napari, neuroglancer, webknossos, ...) from a volume
    larger than memory: each region of the input is read once, and s0 and every level are
    written from that read. Window methods give levels exactly equal to tensorstore's
    `downsample` of s0 by the level's cumulative factor (exact sums for mean, histograms for
    mode and median: never a level computed from a rounded one); `"resize"` levels equal
    scikit-image's `resize` of s0. The NGFF metadata (axes, units, scale and translation of
    every level, following the method's sampling) is written when the levels are. Every check
    runs before anything is created; a run that stops part-way resumes where it stopped when
    the same call runs again.

    Parameters
    ----------
    %(input)s
    output_group : str
        The new OME-Zarr image: `"path/image.ome.zarr"`, a group inside a container
        (`"path/plate.zarr/A1"`), or `"s3://bucket/image.ome.zarr"`. It must be new, or hold
        only this pyramid's levels (and a `labels` group): a rerun completes it. An input that
        is this group's own s0 (`"<output_group>/s0"`) is used as it is, not copied. With
        `"precomputed://folder"` the output is a neuroglancer precomputed volume instead, one
        scale per level; an input that is its scale 0 gets the missing scales.
    levels : int, optional
        How many levels below s0, planned from `voxel_size`: the finest space axes are halved
        first until voxels are as isotropic as possible, then every space axis is halved. Only
        space axes are reduced (channel `c` and time `t` axes keep factor 1), so a 4-D or 5-D
        input needs its axes named (`axes`, or the input's metadata). 0 writes s0 alone. Give
        exactly one of `levels` and `scale_factors`.
    scale_factors : sequence of int or of sequences of int, optional
        The factor of each level relative to the level before it: an int for every axis, or
        one int >= 1 per axis (`[(1, 2, 2), (2, 2, 2)]`). May reduce a time axis (NGFF scales
        time too) but never a channel axis. `[]` writes s0 alone.
    method : {"mean", "mode", "min", "max", "median", "stride", "resize"}, default "mean"
        How each level is computed: the mean, most frequent value, minimum, maximum or median
        of each window, its first voxel (`"stride"`), or scikit-image's `resize` (with `order`
        and `anti_aliasing`). `"mode"`, `"min"`, `"max"`, `"median"`, `"stride"` and resize
        of order 0 never mix values: use one of them for labels.
    %(order)s
    %(anti_aliasing)s
    voxel_size : sequence of float, optional
        Size of an s0 voxel along each axis, finite and > 0, in `units`. None: from the
        input's metadata (OME-Zarr, OME-TIFF, ImageJ TIFF, HDF5 `element_size_um`, microscopy
        files), else 1.
    origin : sequence of float, optional
        Position of the centre of s0's first voxel along each axis (NGFF translation), finite.
        None: from the input's metadata, else 0.
    units : str or sequence of str or None, optional
        NGFF unit names: one per axis (None for none, e.g. for `c`), or a single name for
        every space axis (`"micrometer"`, `"nanometer"`; time axes take `"second"`, ...).
        None: from the input's metadata, else no unit.
    axes : sequence of str, optional
        Names of the input's axes, 2 to 5 of `t`, `c`, `z`, `y`, `x` (other names are space
        axes), unique, ordered time, channel, then space. None: from the input's metadata,
        else the last names of `("t", "c", "z", "y", "x")`.
    chunks : sequence of int, optional
        Chunk shape of every level, one int >= 1 per axis. None: about 64**3 voxels, dividing
        the shards.
    shards : sequence of int, optional
        Shard shape of every level (zarr v3, `ngff_version="0.5"` only), a whole number of
        chunks along every axis; or give `output_options.shards`. None: no shards.
    ngff_version : {"0.5", "0.4"}, default "0.5"
        The OME-Zarr version written: 0.5 is zarr v3, 0.4 is zarr v2.
    name : str, optional
        The multiscale's name in the metadata. None: the last part of `output_group`'s path
        inside its container, else `"image"`.
    labels : bool, default False
        Write a label image (a segmentation): `output_group` must be
        `"<image group>/labels/<name>"`, the input integer, the method label-safe; the image's
        `labels` group lists it.
    %(job_type)s
    %(job_config)s
    %(num_workers)s
    %(output_options)s
    %(storage_options)s

    Returns
    -------
    str
        The path (or URL) of the group written.

    Raises
    ------
    %(raises)s

    See Also
    --------
    pyramid_flow : the same run as a Prefect flow.
    convert : a pyramid for every file a pattern matches.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import zarr
    >>> import bioimage_tasks as bt
    >>> folder = tempfile.TemporaryDirectory()
    >>> image = np.zeros((16, 16), dtype=np.uint16)
    >>> path = bt.pyramid(image, f"{folder.name}/image.ome.zarr", levels=2,
    ...                   voxel_size=(0.5, 0.5), units="micrometer")
    >>> group = zarr.open_group(path, mode="r")
    >>> [group[level].shape for level in ("s0", "s1", "s2")]
    [(16, 16), (8, 8), (4, 4)]
    >>> group.attrs["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"]
    [{'type': 'scale', 'scale': [1.0, 1.0]}, {'type': 'translation', 'translation': [0.25, 0.25]}]
    >>> folder.cleanup()
    """
    check_method_options(method, order, anti_aliasing)
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    _check_levels_and_version(levels, scale_factors, ngff_version)
    source = _checked_source(input, storage_options, method, order, anti_aliasing, job_type)
    chunks, shards = check_chunks_and_shards(
        chunks, shards, options, len(source.shape), ngff_version
    )
    options = replace(options, shards=shards)  # what existing levels must have
    geometry = pyramid_geometry(source, voxel_size, origin, units, axes, planned=levels is not None)
    # a precomputed volume (pyramid_formats.py) or an OME-Zarr group
    group_path = precomputed_output(
        output_group, storage_options, labels, options
    ) or group_output_path(output_group, storage_options)
    if labels:
        check_label_options(group_path, source.dtype, method, order, anti_aliasing)
    spec = level_spec(source, group_path, levels, scale_factors, geometry, chunks, shards)
    reuse_s0 = reuses_s0(input, group_path)
    plan = region_plan(source, spec, method, config, reuse_s0)  # every check before any write
    method_text = (
        method if method != "resize" else f"resize, order {order}, anti-aliasing {anti_aliasing}"
    )
    backend = describe_backend(job_type, num_workers)
    details = _details(
        describe_source(input, source), group_path, method_text, backend, options, spec
    )
    return PyramidOperation(
        input,
        source,
        group_path,
        spec,
        method,
        order,
        anti_aliasing,
        options,
        ngff_version,
        name,
        labels,
        config,
        num_workers,
        details,
        plan,
        reuse_s0,
        job_type,
    )


def _check_levels_and_version(
    levels: int | None, scale_factors: Sequence | None, ngff_version: str
) -> None:
    """Refuse an unknown NGFF version, and both or neither of `levels` and `scale_factors`."""
    if ngff_version not in ("0.4", "0.5"):
        raise ParameterError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    if (levels is None) == (scale_factors is None):
        raise ParameterError(
            "give exactly one of levels (planned from voxel_size) and scale_factors (per level)"
        )


def _checked_source(
    input: Any,
    storage_options: StorageOptions | dict | None,
    method: str,
    order: int,
    anti_aliasing: bool,
    job_type: str,
) -> Any:
    """Open `input` as a Source whose dtype suits the method and whose kind suits the backend."""
    source = as_source(input, storage_options=storage_options)
    check_input_dtype(source.dtype, method, order, anti_aliasing)
    if job_type != "local" and in_memory(source):
        raise ParameterError(
            f"job_type={job_type!r} needs a file-backed input (a zarr/n5 path or array), not numpy"
        )
    return source


def _details(
    input_text: str, group_path: Any, method: str, backend: str, options: OutputOptions, spec: Any
) -> dict[str, str]:
    """The run's description for the summary: input, output, method, backend, options, levels."""
    details = {"input": input_text, "output": str(group_path), "method": method, "backend": backend}
    if options != OutputOptions():
        details["output options"] = options.describe()
    if not spec.level_factors:
        details["levels"] = S0_ALONE
    return details
