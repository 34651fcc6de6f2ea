"""`bioimage-tasks convert`: a folder of microscopy files to OME-Zarr pyramids in one run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from bioimage_tasks.cli_common import (
    Codec,
    Debug,
    JobType,
    Level,
    LevelChunks,
    LevelShards,
    NgffVersion,
    PyramidMethod,
    Quiet,
    UsePrefect,
    Workers,
    fail,
    integers,
    output_options,
    prefect_api_configured,
    quiet_prefect,
)


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
    method: PyramidMethod = "mean",
    chunks: LevelChunks = None,
    shards: LevelShards = None,
    ngff_version: NgffVersion = "0.5",
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
    try:
        report = convert_call(pattern, output_dir, **kwargs)
    except KeyboardInterrupt:  # Ctrl-C: files not started cancelled, finished ones recorded
        from rich.console import Console

        Console(stderr=True).print(INTERRUPTED, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        report = getattr(error, "report", None)
        if report is None:
            fail(error, debug)
    if not quiet or report.failed:
        print(report.table())
    if report.failed:
        raise typer.Exit(1)


INTERRUPTED = "interrupted by SIGINT: rerun the same command to resume (finished files are skipped)"


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
