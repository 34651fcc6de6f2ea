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

from bioimage_tasks.api import built, copy_operation, downsample_operation, pyramid_operation
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
    # the builder's annotations as types, not strings that only its module's globals resolve:
    # Prefect builds the parameter schema and validation model from them
    body.__signature__ = inspect.signature(builder, eval_str=True)
    body.__annotations__ = typing.get_type_hints(builder)
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
    """Write every file `pattern` matches as `<output_dir>/<name>.ome.zarr` (see
    bioimage_tasks.convert): each file's pyramid is a child flow run (pyramid_flow), files one
    after another; a summary artifact lists every file's outcome, size and time.
    `pyramid_options` are further pyramid parameters (e.g. {"voxel_size": [...]}). Ends Failed
    when any file failed, after the others ran."""
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
