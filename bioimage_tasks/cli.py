"""The `bioimage-tasks` command line: the same operations, from a shell. They run on the plain
engine unless a Prefect API is configured (PREFECT_API_URL, in the environment or the active
profile) or `--prefect` is given: then as a flow run, visible in the Prefect UI. The first line
says which. A progress bar on a terminal, quiet with --quiet; errors print one line and exit 1
(a traceback only with --debug)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from bioimage_tasks.cli_common import (
    BlockIds,
    BlockShape,
    Codec,
    Debug,
    Input,
    JobType,
    Level,
    LevelChunks,
    LevelShards,
    Mask,
    NgffVersion,
    Output,
    PyramidMethod,
    Quiet,
    Shards,
    UsePrefect,
    Workers,
    WriteEmptyChunks,
    integers,
    operation,
    output_options,
    run,
    wrote,
)
from bioimage_tasks.cli_convert import convert
from bioimage_tasks.cli_inspect import info, verify_command

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
    method: PyramidMethod = "mean",
    voxel_size: Annotated[
        Optional[str],
        typer.Option("--voxel-size", help="Voxel size of s0 per axis, e.g. 2.0,0.5,0.5."),
    ] = None,
    units: Annotated[
        Optional[str], typer.Option(help="Unit of the spatial axes, e.g. micrometer.")
    ] = None,
    chunks: LevelChunks = None,
    shards: LevelShards = None,
    ngff_version: NgffVersion = "0.5",
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


app.command("verify")(verify_command)
app.command()(convert)
app.command()(info)


def main() -> None:
    app(prog_name="bioimage-tasks")


if __name__ == "__main__":
    sys.exit(main())
