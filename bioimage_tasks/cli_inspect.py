"""`bioimage-tasks verify` and `bioimage-tasks info`: what is stored at a path, and whether its
chunks are still what the runs wrote."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from bioimage_tasks.cli_common import Debug, fail, quiet_prefect


def verify_command(
    path: Annotated[
        str,
        typer.Argument(
            help="An output array (path/container.zarr/key, .n5/key, s3://...) or a pyramid's "
            "OME-Zarr group (every level and staging array)."
        ),
    ],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rewrite the bad chunks by re-running the call that wrote the output (on "
            "threads), then verify again.",
        ),
    ] = False,
    debug: Debug = False,
) -> None:
    """Check every stored chunk of PATH against what its runs wrote: print one line per chunk
    that is missing, unreadable, changed or unrecorded, and a summary; exit 1 if any is bad."""
    quiet_prefect(debug)
    from bioimage_tasks.verify import verify

    try:
        report = verify(path, repair=repair)
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        fail(error, debug)
    for line in report.lines():
        print(line)
    print(report.summary())
    raise typer.Exit(0 if report.ok else 1)


def info(
    path: Annotated[
        str, typer.Argument(help="Any input the flows take (see 'downsample --help').")
    ],
    debug: Debug = False,
) -> None:
    """Print what PATH is: its kind, shape, dtype, chunks, and voxel size, units and axes where
    its metadata gives them."""
    from bioimage_tasks.io import as_source, physical_of

    try:
        source = as_source(path)
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        fail(error, debug)
    physical = physical_of(source)
    rows = {
        "kind": source_kind(source),
        "shape": tuple(source.shape),
        "dtype": source.dtype,
        "chunks": source.write_unit,
        "voxel size": physical.voxel_size,
        "units": physical.units,
        "axes": physical.axes,
        "origin": physical.origin,
    }
    for name, value in rows.items():
        print(f"{name + ':':12} {'-' if value is None else value}")


def source_kind(source: Any) -> str:
    """'OME-TIFF, series 0', 'TIFF slices (120 files)', 'HDF5',
    'OME-Zarr image, level s0 (zarr v3)', 'zarr v3', 'n5'."""
    import zarr

    from bioimage_tasks.io import Hdf5Source, MicroscopySource, TensorStoreSource, TiffSource

    if isinstance(source, TiffSource):
        if source.is_sequence:
            return f"TIFF slices ({len(source.files)} files)"
        return (
            "OME-TIFF" if source.files[0].lower().endswith((".ome.tif", ".ome.tiff")) else "TIFF"
        ) + f", series {source.series}"
    if isinstance(source, Hdf5Source):
        return "HDF5"
    if isinstance(source, MicroscopySource):
        return (
            f"{os.path.splitext(source.file)[1].lstrip('.').upper()}, scene {source.scene} "
            f"(read by {source.reader})"
        )
    if isinstance(source, TensorStoreSource):
        return "n5"
    array = getattr(source, "array", None)
    if isinstance(array, zarr.Array):
        version = f"zarr v{array.metadata.zarr_format}"
        level = str(source.name).rstrip("/").rsplit("/", 1)[-1]
        return (
            f"OME-Zarr image, level {level} ({version})"
            if getattr(source, "physical", None)
            else version
        )
    return type(array).__name__
