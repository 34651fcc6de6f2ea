"""The `bioimage-tasks` command line: the same operations, from a shell. They run on the plain
engine unless a Prefect API is configured (PREFECT_API_URL, in the environment or the active
profile) or `--prefect` is given: then as a flow run, visible in the Prefect UI. The first line
says which. A progress bar on a terminal, quiet with --quiet; errors print one line and exit 1
(a traceback only with --debug)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from bioimage_tasks.cli_common import (
    BlockIds,
    BlockShape,
    Codec,
    Debug,
    Input,
    JobType,
    Level,
    Mask,
    Output,
    Quiet,
    Shards,
    UsePrefect,
    Workers,
    WriteEmptyChunks,
    integers,
    operation,
    output_options,
    prefect_api_configured,
    quiet_prefect,
    run,
    wrote,
)

app = typer.Typer(
    help="Block-wise processing of bio-image volumes larger than memory (Prefect flows).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def downsample(
    input: Input,
    output: Output,
    factor: Annotated[
        str, typer.Option("--factor", "-f", help="Scale factor: one int, or one per axis (1,2,2).")
    ] = "2",
    order: Annotated[
        int, typer.Option(help="Spline order 0-5 (0 is label-safe: picks voxels).")
    ] = 0,
    anti_aliasing: Annotated[
        bool,
        typer.Option(
            "--anti-aliasing/--no-anti-aliasing", help="Gaussian pre-filter, as scikit-image."
        ),
    ] = False,
    method: Annotated[
        str, typer.Option(help="resize, or a window method: mean, mode, min, max, median, stride.")
    ] = "resize",
    job_type: JobType = "local",
    workers: Workers = 1,
    block_shape: BlockShape = None,
    mask: Mask = None,
    block_ids: BlockIds = None,
    codec: Codec = None,
    level: Level = None,
    shards: Shards = None,
    write_empty_chunks: WriteEmptyChunks = False,
    quiet: Quiet = False,
    debug: Debug = False,
    use_prefect: UsePrefect = False,
) -> None:
    """Downsample INPUT into OUTPUT exactly as scikit-image's resize (or tensorstore's window
    methods) would, block by block."""
    factors = integers(factor, "--factor")
    ids, shape = integers(block_ids, "--block-ids"), integers(block_shape, "--block-shape")
    shard_shape = integers(shards, "--shards")
    downsample_flow = operation("downsample", use_prefect, quiet, debug)
    run(
        lambda: downsample_flow(
            input,
            factors[0] if len(factors) == 1 else factors,
            output,
            order=order,
            anti_aliasing=anti_aliasing,
            method=method,
            block_shape=shape,
            job_type=job_type,
            num_workers=workers,
            mask=mask,
            block_ids=ids,
            output_options=output_options(codec, level, shard_shape, write_empty_chunks),
        ),
        quiet,
        debug,
        wrote(output),
    )


@app.command()
def copy(
    input: Input,
    output: Output,
    job_type: JobType = "local",
    workers: Workers = 1,
    block_shape: BlockShape = None,
    mask: Mask = None,
    block_ids: BlockIds = None,
    codec: Codec = None,
    level: Level = None,
    shards: Shards = None,
    write_empty_chunks: WriteEmptyChunks = False,
    quiet: Quiet = False,
    debug: Debug = False,
    use_prefect: UsePrefect = False,
) -> None:
    """Copy INPUT into OUTPUT block by block (format conversion: zarr v2/v3, n5)."""
    ids, shape = integers(block_ids, "--block-ids"), integers(block_shape, "--block-shape")
    shard_shape = integers(shards, "--shards")
    copy_flow = operation("copy", use_prefect, quiet, debug)
    run(
        lambda: copy_flow(
            input,
            output,
            block_shape=shape,
            job_type=job_type,
            num_workers=workers,
            mask=mask,
            block_ids=ids,
            output_options=output_options(codec, level, shard_shape, write_empty_chunks),
        ),
        quiet,
        debug,
        wrote(output),
    )


@app.command()
def pyramid(
    input: Input,
    output_group: Annotated[
        str,
        typer.Argument(
            help="OME-Zarr group to write, e.g. data/image.zarr, "
            "or a precomputed volume, precomputed://data/vol."
        ),
    ],
    levels: Annotated[
        Optional[int], typer.Option(help="Number of levels below s0, planned from --voxel-size.")
    ] = None,
    factors: Annotated[
        Optional[str],
        typer.Option(help="Per-level factors relative to the previous level: '2;1,2,2'."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="mean, mode (labels), min, max, median, stride, or resize.")
    ] = "mean",
    voxel_size: Annotated[
        Optional[str],
        typer.Option("--voxel-size", help="Voxel size of s0 per axis, e.g. 2.0,0.5,0.5."),
    ] = None,
    units: Annotated[
        Optional[str], typer.Option(help="Unit of the spatial axes, e.g. micrometer.")
    ] = None,
    chunks: Annotated[
        Optional[str], typer.Option(help="Chunk shape of every level, e.g. 64,64,64.")
    ] = None,
    shards: Annotated[
        Optional[str], typer.Option(help="Shard shape (zarr v3 / NGFF 0.5 only).")
    ] = None,
    ngff_version: Annotated[
        str, typer.Option("--ngff-version", help="0.5 (zarr v3) or 0.4 (zarr v2).")
    ] = "0.5",
    job_type: JobType = "local",
    workers: Workers = 1,
    codec: Codec = None,
    level: Level = None,
    write_empty_chunks: WriteEmptyChunks = False,
    quiet: Quiet = False,
    debug: Debug = False,
    use_prefect: UsePrefect = False,
) -> None:
    """Write INPUT as an OME-Zarr multiscale image (s0..sN) with exact per-level geometry."""
    scale_factors = None
    if factors is not None:
        scale_factors = [
            f[0] if len(f) == 1 else f
            for f in (integers(level, "--factors") for level in factors.split(";"))
        ]
    sizes = None if voxel_size is None else tuple(float(v) for v in voxel_size.split(","))
    pyramid_flow = operation("pyramid", use_prefect, quiet, debug)
    chunk_shape, shard_shape = integers(chunks, "--chunks"), integers(shards, "--shards")
    run(
        lambda: pyramid_flow(
            input,
            output_group,
            levels=levels,
            scale_factors=scale_factors,
            method=method,
            voxel_size=sizes,
            units=units,
            chunks=chunk_shape,
            shards=shard_shape,
            ngff_version=ngff_version,
            job_type=job_type,
            num_workers=workers,
            output_options=output_options(codec, level, None, write_empty_chunks),
        ),
        quiet,
        debug,
        lambda group: f"wrote OME-Zarr multiscale image {group}",
    )


@app.command("verify")
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
    from rich.console import Console

    from bioimage_tasks.verify import verify

    try:
        report = verify(path, repair=repair)
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        if debug:
            raise
        Console(stderr=True).print(
            f"[red]error:[/red] {type(error).__name__}: {error}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    for line in report.lines():
        print(line)
    print(report.summary())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def convert(
    pattern: Annotated[
        str,
        typer.Argument(help="Input files: a glob ('in/*.czi'; quote it), a folder, or one file."),
    ],
    output_dir: Annotated[
        str, typer.Argument(help="Folder that receives <name>.ome.zarr per input.")
    ],
    levels: Annotated[
        Optional[int], typer.Option(help="Number of levels below s0, planned from the voxel size.")
    ] = None,
    factors: Annotated[
        Optional[str], typer.Option(help="Per-level factors instead of --levels: '2;1,2,2'.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="mean, mode (labels), min, max, median, stride, or resize.")
    ] = "mean",
    chunks: Annotated[
        Optional[str], typer.Option(help="Chunk shape of every level, e.g. 64,64,64.")
    ] = None,
    shards: Annotated[
        Optional[str], typer.Option(help="Shard shape (zarr v3 / NGFF 0.5 only).")
    ] = None,
    ngff_version: Annotated[
        str, typer.Option("--ngff-version", help="0.5 (zarr v3) or 0.4 (zarr v2).")
    ] = "0.5",
    keep_axes: Annotated[
        str,
        typer.Option(
            "--keep-axes", help="Axes of microscopy files kept even when singletons, e.g. c."
        ),
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be written.")
    ] = False,
    job_type: JobType = "local",
    workers: Workers = 1,
    codec: Codec = None,
    level: Level = None,
    quiet: Quiet = False,
    debug: Debug = False,
    use_prefect: UsePrefect = False,
) -> None:
    """Write every file PATTERN matches as OUTPUT_DIR/<name>.ome.zarr (a pyramid each), one file
    after another; a rerun finishes only what is missing. Exits 1 when any file failed."""
    from rich.console import Console

    scale_factors = None
    if factors is not None:
        parsed = (integers(part, "--factors") for part in factors.split(";"))
        scale_factors = [f[0] if len(f) == 1 else list(f) for f in parsed]
    chunk_shape, shard_shape = integers(chunks, "--chunks"), integers(shards, "--shards")
    kwargs = dict(
        levels=levels,
        scale_factors=scale_factors,
        method=method,
        chunks=chunk_shape,
        shards=shard_shape,
        ngff_version=ngff_version,
        job_type=job_type,
        num_workers=workers,
        keep_axes=keep_axes,
        dry_run=dry_run,
        output_options=output_options(codec, level, None, False),
    )
    convert_call = convert_function(use_prefect, quiet, debug)
    console = Console(stderr=True)
    try:
        report = convert_call(pattern, output_dir, **kwargs)
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        report = getattr(error, "report", None)
        if report is None:
            if debug:
                raise
            console.print(
                f"[red]error:[/red] {type(error).__name__}: {error}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
    if not quiet or report.failed:
        print(report.table())
    if report.failed:
        raise typer.Exit(1)


def convert_function(use_prefect: bool, quiet: bool, debug: bool) -> Callable[..., Any]:
    """`bioimage_tasks.convert`, or `convert_flow` when Prefect is asked for or configured."""
    from rich.console import Console

    use_prefect = use_prefect or prefect_api_configured()
    if not quiet:
        where = "as a Prefect flow run" if use_prefect else "on the plain engine"
        Console(stderr=True).print(
            f"bioimage-tasks convert: running {where}", highlight=False, soft_wrap=True
        )
    if use_prefect:
        quiet_prefect(debug)
        from bioimage_tasks.prefect.flows import convert_flow

        return convert_flow
    if debug:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from bioimage_tasks.convert import convert as convert_files

    return convert_files


@app.command()
def info(
    path: Annotated[
        str, typer.Argument(help="Any input the flows take (see 'downsample --help').")
    ],
    debug: Debug = False,
) -> None:
    """Print what PATH is: its kind, shape, dtype, chunks, and voxel size, units and axes where
    its metadata gives them."""
    from rich.console import Console

    from bioimage_tasks.io import as_source, physical_of

    try:
        source = as_source(path)
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        if debug:
            raise
        Console(stderr=True).print(
            f"[red]error:[/red] {type(error).__name__}: {error}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
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


def main() -> None:
    app(prog_name="bioimage-tasks")


if __name__ == "__main__":
    sys.exit(main())
