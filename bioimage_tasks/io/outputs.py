"""Where results go: check an output against what will be written (before any write), then
create or open it. A missing output path is created as zarr (v3, or v2 inside a v2 container) or
n5; an existing one must have the right shape and a dtype that holds the result, and the codec
and shards `OutputOptions` name."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from bioimage_tasks.errors import ParameterError, StorageError
from bioimage_tasks.grid import chunks_dividing, default_block_shape
from bioimage_tasks.io import local_zarr
from bioimage_tasks.io.inputs import as_source, refuse_input_only
from bioimage_tasks.io.kv import LOCAL_IO, Location
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.options import OutputOptions, check_existing
from bioimage_tasks.io.paths import ContainerPath
from bioimage_tasks.io.precomputed_output import PrecomputedTarget
from bioimage_tasks.io.source import Source
from bioimage_tasks.io.urls import StorageOptions, UrlPath, is_url
from bioimage_tasks.io.zarr_array import ArraySource

TOKEN_ATTRIBUTE = "bioimage_tasks_token"


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, eq=False)
class OutputPlan:
    """A checked output: an existing sink, or what to create. `open()` does the creating."""

    shape: tuple[int, ...]
    dtype: np.dtype
    existing: Source | None = None
    create_at: ContainerPath | UrlPath | PrecomputedTarget | None = None
    chunks: tuple[int, ...] | None = None
    options: OutputOptions = OutputOptions()

    @property
    def write_unit(self) -> tuple[int, ...] | None:
        if self.existing is not None:
            return self.existing.write_unit
        return self.options.shards or self.chunks

    def open(self) -> ArraySource | TensorStoreSource:
        if self.existing is not None:
            return with_write_empty_chunks(self.existing, self.options.write_empty_chunks)
        if self.create_at is None:
            return ArraySource(np.zeros(self.shape, self.dtype), "memory")
        return create_array(
            self.create_at,
            self.shape,
            self.dtype,
            self.chunks,
            self.options.shards,
            options=self.options,
        )


def plan_output(
    output: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    block_shape: tuple[int, ...] | None = None,
    options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> OutputPlan:
    """Check `output` can receive an array of `shape` and `dtype` stored as `options` ask; raise
    ValueError naming `output` otherwise. Nothing is created or written here. A new output gets
    chunks of about 64**3 voxels that divide `block_shape` and the shards, where given.
    `storage_options`: how to reach object storage (io/urls.py)."""
    dtype = np.dtype(dtype)
    options = options or OutputOptions()
    if output is None:
        refuse_in_memory(options)
        return OutputPlan(shape, dtype, options=options)
    if isinstance(output, PrecomputedTarget):  # io/precomputed_output.py
        return output.plan(shape, dtype, block_shape, options)
    refuse_input_only(output)
    if isinstance(output, (str, os.PathLike)):
        path = output_path(os.fspath(output), storage_options)
        check_array_output(path)
        if not path.exists():
            options.check_shards(
                len(shape), "n5" if path.format == "n5" else f"zarr v{path.zarr_format()}"
            )
            chunks = default_block_shape(shape, None)
            for unit in (block_shape, options.shards):
                chunks = chunks if unit is None else chunks_dividing(unit, chunks)
            return OutputPlan(shape, dtype, create_at=path, chunks=chunks, options=options)
        existing = path.open("r+")
    else:
        existing = as_source(output, "output", storage_options)
        if not hasattr(existing, "write"):
            raise ParameterError(
                f"output must be writable (a numpy, zarr or tensorstore array), got {output!r}"
            )
    if existing.shape != shape:
        raise ParameterError(f"output has shape {existing.shape}, expected {shape}")
    if not np.can_cast(dtype, existing.dtype, "safe"):
        raise ParameterError(f"output dtype {existing.dtype} cannot hold the result dtype {dtype}")
    check_existing_output(existing, options, getattr(existing, "name", repr(output)))
    return OutputPlan(shape, existing.dtype, existing=existing, options=options)


def output_path(
    output: str, storage_options: StorageOptions | dict | None, parameter: str = "output"
) -> ContainerPath | UrlPath:
    """A path or a writable URL, checked; a URL's endpoint and bucket are probed (ValueError, or
    StorageError for an endpoint that does not answer)."""
    if not is_url(output):
        return ContainerPath.parse(output, parameter)
    path = UrlPath.parse(output, parameter, storage_options)
    if not path.writable:
        raise ParameterError(
            f"{parameter}: {path.scheme}:// is read-only; write to a local path or an s3:// URL, "
            f"got {output!r}"
        )
    try:
        path.exists()
    except (ValueError, StorageError) as error:
        raise type(error)(f"{parameter}: {error}") from None
    return path


def check_array_output(path: ContainerPath | UrlPath, parameter: str = "output") -> None:
    """An output path names an array or nothing yet: a new array written at a group, or in a
    folder holding other things (a bare container of other arrays), would sit over them."""
    node = path.node()
    if node == "group":
        raise ParameterError(
            f"{parameter} {str(path)!r} is a group, not an array: give a new "
            f"array path inside it, e.g. '{path}/<name>'"
        )
    if node == "folder":
        folder = os.path.join(path.container, path.key)
        held = sorted(name for name in os.listdir(folder) if not name.startswith("."))
        if held:
            raise ParameterError(
                f"{parameter} {str(path)!r} is a folder holding {held[:5]}, not "
                f"an array: give a new array path inside it, e.g. '{path}/<name>'"
            )


def check_existing_output(sink: Source, options: OutputOptions, name: str) -> None:
    """Refuse an existing output (`name`) whose codec or shards differ from those `options` ask
    for, or a numpy one given any stored-chunk option: options never change an existing output."""
    layout = stored_layout(sink)
    if layout is None:
        refuse_in_memory(options)
    else:
        check_existing(options, *layout, name)


def refuse_in_memory(options: OutputOptions) -> None:
    """Codec, shards and `write_empty_chunks` are about stored chunks: a numpy output has none."""
    if options.changes_layout or options.write_empty_chunks:
        raise ParameterError(
            f"output_options ({options.describe()}) apply to zarr and n5 outputs, not to a numpy "
            "output: give an output path"
        )


def stored_layout(sink: Source) -> tuple[dict, tuple[int, ...] | None] | None:
    """A zarr or tensorstore output's metadata (as JSON) and its shards (None without); None for
    numpy."""
    array = getattr(sink, "array", None)
    if isinstance(array, zarr.Array):
        return array.metadata.to_dict(), array.shards
    if isinstance(array, ts.TensorStore):
        write, read = array.chunk_layout.write_chunk.shape, array.chunk_layout.read_chunk.shape
        return array.spec().to_json().get("metadata", {}), tuple(write) if tuple(write) != tuple(
            read
        ) else None
    return None


def with_write_empty_chunks(
    sink: ArraySource | TensorStoreSource, write_empty_chunks: bool
) -> ArraySource | TensorStoreSource:
    """`sink`, writing chunks equal to the fill value (`write_empty_chunks`) or leaving them out:
    zarr's array config `write_empty_chunks`, which `ArraySource.fast_io` passes on to
    tensorstore, or tensorstore's `store_data_equal_to_fill_value`. Both survive pickling."""
    array = getattr(sink, "array", None)
    if isinstance(array, zarr.Array) and array.config.write_empty_chunks != write_empty_chunks:
        return ArraySource(array.with_config({"write_empty_chunks": write_empty_chunks}), sink.name)
    if isinstance(array, ts.TensorStore):
        spec = array.spec().to_json()
        if spec.get("store_data_equal_to_fill_value", False) != write_empty_chunks:
            if (
                spec.get("kvstore", {}).get("driver") == "memory"
            ):  # reopened, it would be another, empty store
                raise ParameterError(
                    "output_options.write_empty_chunks cannot change for an in-memory tensorstore "
                    "output: open it with store_data_equal_to_fill_value yourself"
                )
            spec["store_data_equal_to_fill_value"] = write_empty_chunks
            return TensorStoreSource(
                ts.open(spec, open=True, read=True, write=True, context=LOCAL_IO).result(),
                sink.name,
                sink.location,
            )
    return sink


def create_array(
    path: ContainerPath | UrlPath,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None = None,
    dimension_names: tuple[str, ...] | None = None,
    options: OutputOptions | None = None,
) -> ArraySource | TensorStoreSource:
    """Create an empty (fill value 0) array at `path`, zarr or n5 by its container suffix, with a
    fresh identity token in its attributes (and, in zarr v3, `dimension_names` when given), the
    codec of `options` (default: zarr's, gzip for n5) and its `write_empty_chunks`."""
    options = options or OutputOptions()
    if isinstance(path, (UrlPath, PrecomputedTarget)):
        sink = path.create(shape, dtype, chunks, shards, dimension_names, options)
        sink.set_attribute(TOKEN_ATTRIBUTE, new_token())
        return sink
    if path.format == "n5":
        spec = path.n5_spec() | {
            "metadata": {
                "dimensions": list(shape),
                "blockSize": list(chunks),
                "dataType": np.dtype(dtype).name,
                "compression": options.n5_compression(),
            },
            "store_data_equal_to_fill_value": options.write_empty_chunks,
        }
        sink = TensorStoreSource(ts.open(spec, create=True, context=LOCAL_IO).result(), str(path))
        sink.set_attribute(TOKEN_ATTRIBUTE, new_token())
        return sink
    zarr_format = path.zarr_format()
    array = local_zarr.create_array(
        path.container,
        path.key,
        {TOKEN_ATTRIBUTE: new_token()},
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        compressors=options.zarr_compressors(zarr_format),
        fill_value=0,
        zarr_format=zarr_format,
        dimension_names=dimension_names if zarr_format == 3 else None,
    )
    return with_write_empty_chunks(ArraySource(array, str(path)), options.write_empty_chunks)


def open_group(path: ContainerPath | UrlPath, zarr_format: int) -> tuple[Any, str | Location]:
    """The zarr group at `path` (created if missing; its `attrs` a mapping with `update`) and where
    it keeps its files (its folder, or its Location on object storage)."""
    if isinstance(path, UrlPath):
        return path.open_group(zarr_format), path.location()
    group = local_zarr.new_group(path.container, path.key, zarr_format)
    if group is None:  # it exists (or its parents are not all groups yet): zarr-python opens it
        group = zarr.open_group(path.container, path=path.key, mode="a", zarr_format=zarr_format)
    return group, os.path.join(path.container, path.key)


def output_token(sink: ArraySource | TensorStoreSource) -> str | None:
    """The output's identity token, written into its attributes on first use; it changes whenever
    the output is deleted and recreated. None for outputs without a folder on disk."""
    if getattr(sink, "directory", None) is None:
        return None
    token = sink.get_attribute(TOKEN_ATTRIBUTE)
    if token is None:
        token = new_token()
        sink.set_attribute(TOKEN_ATTRIBUTE, token)
    return token
