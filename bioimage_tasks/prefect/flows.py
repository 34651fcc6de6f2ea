"""The flows: each is the plain operation builder (api.py) run by the Prefect edge, so a flow
has exactly the builder's parameters and documentation and validates nothing twice. `flows/`
exposes them to users and deployments; the command line's `--prefect` runs take them from here."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger

from bioimage_tasks import api
from bioimage_tasks.api import built, copy_operation, downsample_operation, pyramid_operation
from bioimage_tasks.api_docs import shared_docs
from bioimage_tasks.convert import ConvertFailedError, ConvertReport, convert_files
from bioimage_tasks.io import OutputOptions
from bioimage_tasks.naming import flow_run_namer
from bioimage_tasks.prefect.artifacts import publish_summary
from bioimage_tasks.prefect.edge import run_in_flow
from bioimage_tasks.prefect.flow_class import BlockwiseFlow, blockwise_flow
from bioimage_tasks.runners import RunnerConfig


def _factor_text(parameters: dict[str, Any]) -> str:
    factor = parameters["scale_factor"]
    return "x" + ("x".join(str(f) for f in factor) if isinstance(factor, Sequence) else str(factor))


FLOW_PARAGRAPH = """\
    As a Prefect flow run, with the same parameters and the same output as the plain function:
    blocks run in batches as Prefect tasks (`process-blocks`), each retried
    `job_config.retries` times with exponential backoff from `job_config.retry_delay` (a retry
    redoes only the blocks not yet recorded done); a finished batch is cached under
    `job_config.result_storage`, keyed by the run, the batch and its blocks' input signatures
    and records, so a rerun skips it. A progress artifact moves while blocks finish and a
    markdown artifact (`{kind}-summary`) sums the run up; the events
    `bioimage-tasks.run.completed`, `bioimage-tasks.run.failed` and
    `bioimage-tasks.blocks.failed`, about the output, let automations react. Parameters from a
    deployment may be JSON: configs and options as dicts of their fields.

"""
FLOW_EXAMPLES = {
    "downsample": """\
    from flows import downsample_flow

    downsample_flow("data/in.zarr/raw", 2, "data/out.zarr/half", method="mean")
    downsample_flow.serve(  # nightly, from a process that serves it
        name="nightly-downsample",
        cron="0 2 * * *",
        parameters={"input": "data/in.zarr/raw", "scale_factor": 2, "output": "data/half.zarr/raw"},
    )""",
    "copy": """\
    from flows import copy_flow
    from bioimage_tasks import LocalClusterConfig

    copy_flow(
        "stack.tif",
        "data/stack.zarr/raw",
        job_type="subprocess",
        job_config=LocalClusterConfig(memory_limit="4GB"),
        num_workers=4,
        output_options={"codec": "zstd", "level": 5, "shards": [256, 256, 256]},
    )""",
    "pyramid": """\
    from flows import pyramid_flow
    from bioimage_tasks import SlurmConfig

    pyramid_flow(
        "s3://lab/raw/sample1.zarr/raw",
        "s3://lab/ome/sample1.ome.zarr",
        levels=5,
        method="mean",
        job_type="slurm",
        job_config=SlurmConfig(partition="cpu", memory="8GB", walltime="02:00:00"),
        num_workers=16,
    )""",
}


def flow_doc(kind: str, builder_doc: str | None) -> str | None:
    """The docstring of a flow: its builder's (the plain function's) with a paragraph on what the
    flow adds after the summary, and the flow's own examples (they need a Prefect API: not
    doctests) instead of the plain function's."""
    if builder_doc is None:  # python -OO
        return None
    head, _, rest = builder_doc.partition("    Parameters\n")
    body = rest.split("    See Also\n")[0].split("    Examples\n")[0]
    return (
        f"{head}{FLOW_PARAGRAPH.format(kind=kind)}    Parameters\n{body}"
        f"    See Also\n    --------\n    {kind} : the same run without Prefect.\n\n"
        f"    Examples\n    --------\n    ```python\n{FLOW_EXAMPLES[kind]}\n    ```\n    "
    )


FLOWS: dict[str, tuple[Callable[..., Any], Callable[[], str]]] = {
    "downsample": (downsample_operation, flow_run_namer("downsample", detail=_factor_text)),
    "copy": (copy_operation, flow_run_namer("copy")),
    "pyramid": (pyramid_operation, flow_run_namer("pyramid", "output_group")),
}


@functools.cache
def flow_of(kind: str) -> BlockwiseFlow:
    """The flow of operation `kind`: its builder's checked operation, run in a flow run."""
    builder, namer = FLOWS[kind]

    @functools.wraps(builder)
    def body(*args: Any, **kwargs: Any) -> Any:
        return run_in_flow(built(builder, args, kwargs))

    body.__name__ = body.__qualname__ = f"{kind}_flow"
    body.__doc__ = flow_doc(kind, builder.__doc__)
    # the builder's annotations as types, not strings that only its module's globals resolve:
    # Prefect builds the parameter schema and validation model from them; the flow returns
    # what the plain function returns (its output), not the builder's operation
    returns = inspect.signature(getattr(api, kind)).return_annotation
    body.__signature__ = inspect.signature(builder, eval_str=True).replace(
        return_annotation=returns
    )
    body.__annotations__ = {
        name: hint for name, hint in typing.get_type_hints(builder).items() if name != "return"
    }
    del (
        body.__wrapped__
    )  # Prefect finds a flow's entrypoint from its module: this one's `<kind>_flow`
    body.__module__ = __name__
    return blockwise_flow(kind, namer)(body)


downsample_flow = flow_of("downsample")
copy_flow = flow_of("copy")
pyramid_flow = flow_of("pyramid")


def _convert_run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return f"convert {parameters['pattern']} -> {parameters['output_dir']}"


@blockwise_flow("convert", _convert_run_name)
@shared_docs
def convert_flow(
    pattern: str,
    output_dir: str,
    levels: int | None = None,
    scale_factors: list[int | list[int]] | None = None,
    method: str = "mean",
    chunks: list[int] | None = None,
    shards: list[int] | None = None,
    ngff_version: str = "0.5",
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    output_options: OutputOptions | None = None,
    keep_axes: str = "",
    dry_run: bool = False,
    pyramid_options: dict[str, Any] | None = None,
) -> ConvertReport:
    """Convert every file `pattern` matches into an OME-Zarr image in `output_dir`, as a flow.

    The Prefect flow of `bioimage_tasks.convert`: each file `<name>.<ext>` becomes
    `<output_dir>/<name>.ome.zarr`, written by `pyramid_flow` as a child flow run (with its
    tasks, retries, artifacts and events), one file after another. Resumable as `convert` is:
    files converted with the same input and parameters are skipped. A markdown artifact
    (`convert-summary`) lists every file's outcome, size and time; the flow run ends Failed
    (`ConvertFailedError`) when a file failed, after the others ran.

    Parameters
    ----------
    pattern : str
        The input files: a glob (`"in/*.czi"`), a folder (all its files), or one file.
    output_dir : str
        A local folder, created if missing.
    levels, scale_factors, method, chunks, shards, ngff_version
        As `pyramid` takes them, the same for every file; give `levels` or `scale_factors`.
    %(job_type)s
    %(job_config)s
    %(num_workers)s
    %(output_options)s
    keep_axes : str, default ""
        Axes among `"tczyx"` that microscopy files keep even where they have length 1.
    dry_run : bool, default False
        Only report what a run would do with each file; nothing is written.
    pyramid_options : dict, optional
        Further parameters of `pyramid`, e.g. `{"voxel_size": [2.0, 0.5, 0.5]}` for files
        whose metadata says none.

    Returns
    -------
    ConvertReport
        Every file's outcome, in the order of their names.

    Raises
    ------
    ParameterError
        A parameter common to all files cannot be used; raised before anything is written.
    ConvertFailedError
        Some files failed (their reasons are in the report); the others are written.

    See Also
    --------
    convert : the same without Prefect.

    Examples
    --------
    ```python
    from flows import convert_flow

    convert_flow("microscope/2026-12-05/*.czi", "ome/2026-12-05", levels=5, keep_axes="c")
    ```
    """
    report = convert_files(
        pattern,
        output_dir,
        pyramid_flow,
        dry_run=dry_run,
        keep_axes=keep_axes,
        log=get_run_logger().info,
        levels=levels,
        scale_factors=scale_factors,
        method=method,
        chunks=chunks,
        shards=shards,
        ngff_version=ngff_version,
        job_type=job_type,
        job_config=job_config,
        num_workers=num_workers,
        output_options=output_options,
        **(pyramid_options or {}),
    )
    publish_summary(report.markdown(), key="convert-summary")
    if report.failed:
        raise ConvertFailedError(report)
    return report
