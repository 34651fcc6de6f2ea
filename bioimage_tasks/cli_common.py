"""What every command of the command line shares (cli.py): the options, the choice between the
plain engine and a Prefect flow run, and the call that turns errors into one line and shows a
progress bar."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, Optional

import typer

# Options both commands take.
Input = Annotated[
    str,
    typer.Argument(
        help="Input: path/container.zarr/key, path/container.n5/key, image.ome.zarr "
        "(an OME-Zarr image), stack.tif or stack.ome.tif (series N: stack.ome.tif/N), a folder "
        "or glob of 2-D TIFF slices ('slices/*.tif'), file.h5/dataset, file.czi (scene N: "
        "file.czi/N), .nd2, .lif."
    ),
]
Output = Annotated[
    str, typer.Argument(help="Output array path (created if missing; zarr or n5 by its suffix).")
]
JobType = Annotated[
    str,
    typer.Option(
        "--job-type",
        help="Where batches run: local (threads), subprocess (local Dask cluster), slurm, or dask.",
    ),
]
Workers = Annotated[
    int, typer.Option("--workers", "-w", help="Threads, worker processes or SLURM jobs.")
]
BlockShape = Annotated[
    Optional[str],
    typer.Option(
        "--block-shape",
        help="Block shape in output space, e.g. 64,64,64 (default: from the output chunks and the "
        "memory budget); blocks sharing a chunk or shard run in one task, in turn.",
    ),
]
Mask = Annotated[
    Optional[str],
    typer.Option(help="Output-space mask array; only its nonzero voxels are written."),
]
BlockIds = Annotated[
    Optional[str],
    typer.Option("--block-ids", help="Only these blocks of the output grid, e.g. 0,5,7."),
]
Codec = Annotated[
    Optional[str],
    typer.Option(
        help="Codec of a new output: zstd, blosc-lz4 or gzip (default: zstd for zarr, gzip for n5)."
    ),
]
Level = Annotated[
    Optional[int],
    typer.Option(
        help="Codec level (zstd 1-22, default 3; blosc-lz4 and gzip 1-9, defaults 5 and 6)."
    ),
]
Shards = Annotated[
    Optional[str], typer.Option(help="Shard shape of a new zarr v3 output, e.g. 256,256,256.")
]
WriteEmptyChunks = Annotated[
    bool,
    typer.Option(
        "--write-empty-chunks/--no-write-empty-chunks",
        help="Store chunks that hold only zeros (default: leave them out).",
    ),
]
# the options `pyramid` and `convert` share
PyramidMethod = Annotated[
    str, typer.Option(help="mean, mode (labels), min, max, median, stride, or resize.")
]
LevelChunks = Annotated[
    Optional[str], typer.Option(help="Chunk shape of every level, e.g. 64,64,64.")
]
LevelShards = Annotated[Optional[str], typer.Option(help="Shard shape (zarr v3 / NGFF 0.5 only).")]
NgffVersion = Annotated[str, typer.Option("--ngff-version", help="0.5 (zarr v3) or 0.4 (zarr v2).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks and the run's logs.")]
UsePrefect = Annotated[
    bool,
    typer.Option(
        "--prefect",
        help="Run as a Prefect flow run (default: only when a Prefect API is configured).",
    ),
]


def prefect_api_configured() -> bool:
    """Whether PREFECT_API_URL is set, in the environment or the active Prefect profile (read
    from its file: importing Prefect to ask costs over a second)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = os.path.expanduser(os.environ.get("PREFECT_HOME", "~/.prefect"))
    path = os.environ.get("PREFECT_PROFILES_PATH", os.path.join(home, "profiles.toml"))
    try:
        with open(path, "rb") as file:
            profiles = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return bool(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


def operation(kind: str, use_prefect: bool, quiet: bool, debug: bool) -> Callable[..., Any]:
    """The plain function of operation `kind`, or its flow when Prefect is asked for or
    configured; says which on the first line (unless quiet)."""
    from rich.console import Console

    use_prefect = use_prefect or prefect_api_configured()
    if not quiet:
        api_url = (
            os.environ.get("PREFECT_API_URL") or "the active profile's API, or a temporary server"
        )
        where = (
            f"as a Prefect flow run ({api_url})"
            if use_prefect
            else "on the plain engine (no Prefect API configured; --prefect runs it as a flow run)"
        )
        Console(stderr=True).print(
            f"bioimage-tasks {kind}: running {where}", highlight=False, soft_wrap=True
        )
    if use_prefect:
        quiet_prefect(debug)
        from bioimage_tasks.prefect.flows import flow_of

        return flow_of(kind)
    if debug:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    import bioimage_tasks.api as api

    return getattr(api, kind)


def integers(text: str | None, name: str) -> tuple[int, ...] | None:
    """'64,64,64' -> (64, 64, 64); a clear error for anything else."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated integers, got {text!r}") from None


def output_options(
    codec: str | None, level: int | None, shards: tuple[int, ...] | None, write_empty_chunks: bool
) -> Any:
    """The flows' `output_options` from the options (None when none is given); a bad combination
    raises the flow's ValueError, printed as one line by `run`."""
    from bioimage_tasks.io import OutputOptions

    options = OutputOptions(codec, level, shards, write_empty_chunks)
    return None if options == OutputOptions() else options


def run(flow_call: Callable[[], Any], quiet: bool, debug: bool, done: Callable[[Any], str]) -> None:
    """Call a flow with a progress bar (on a terminal, unless quiet) and turn errors into one line;
    `done` says what the result is. Ctrl-C or SIGTERM end the run within seconds (interrupts.py)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bioimage_tasks.interrupts import RunInterrupts
    from bioimage_tasks.plain import progress_listener

    console = Console(stderr=True)
    show_bar = not quiet and console.is_terminal
    bar = (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        if show_bar
        else None
    )
    interrupts = RunInterrupts(console, debug, before_exit=bar.stop if bar else None)
    try:
        with interrupts.watching():
            if bar is not None:
                with bar:
                    task = bar.add_task("blocks", total=None)
                    token = progress_listener.set(
                        lambda done, total: bar.update(task, completed=done, total=total)
                    )
                    try:
                        result = flow_call()
                    finally:
                        progress_listener.reset(token)
            else:
                result = flow_call()
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        fail(error, debug)
    if not quiet:
        console.print(done(result), highlight=False)


def fail(error: BaseException, debug: bool) -> NoReturn:
    """The CLI's contract for errors: one line on stderr and exit 1 (the traceback with --debug)."""
    from rich.console import Console

    if debug:
        raise error
    Console(stderr=True).print(
        f"[red]error:[/red] {type(error).__name__}: {error}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(1) from None


def wrote(output: str) -> Callable[[Any], str]:
    return lambda array: f"wrote {output}: shape {tuple(array.shape)} {array.dtype}"


def quiet_prefect(debug: bool) -> None:
    """Keep Prefect's own console output (run logs, tracebacks) off the terminal: the bar shows
    progress and errors print as one line. The logs still go to the Prefect API and UI.
    --debug keeps everything. (Prefect reads PREFECT_LOGGING_* overrides of its logging config.)"""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if debug:
        os.environ["PREFECT_LOGGING_LEVEL"] = "DEBUG"
    else:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
