"""`verify_flow`: `bioimage_tasks.verify.verify` as a Prefect flow, e.g. on a schedule: a markdown
artifact lists the bad chunks, and the run fails while any is left (after `repair`, if asked)."""

from __future__ import annotations

from prefect import get_run_logger

from bioimage_tasks.api_docs import shared_docs
from bioimage_tasks.errors import StorageError
from bioimage_tasks.io import StorageOptions
from bioimage_tasks.naming import describe
from bioimage_tasks.prefect.artifacts import publish_summary
from bioimage_tasks.prefect.flow_class import blockwise_flow
from bioimage_tasks.verify import VerifyReport, verify


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"verify {describe(flow_run.parameters['path'])}"


@blockwise_flow("verify", _run_name)
@shared_docs
def verify_flow(
    path: str, storage_options: StorageOptions | dict | None = None, repair: bool = False
) -> VerifyReport:
    """Check that every stored chunk of an output is as it was written, as a flow.

    The Prefect flow of `bioimage_tasks.verify.verify`, e.g. on a schedule: every chunk (or
    shard) file of the output array or pyramid group is checked against the chunk manifest of
    the run that wrote it (missing, unreadable, changed, unrecorded). Each bad chunk is a
    warning in the log, and a markdown artifact (`verify-summary`) lists them; the flow run
    fails while any is left, so an automation or a person notices.

    Parameters
    ----------
    path : str
        The output: a zarr or n5 array (`"out.zarr/key"`), an OME-Zarr group written by
        `pyramid` (`"image.ome.zarr"`), or an `"s3://bucket/..."` URL.
    %(storage_options)s
    repair : bool, default False
        Rewrite the bad chunks by re-running the call that wrote the output (kept beside it),
        then check again.

    Returns
    -------
    VerifyReport
        What was checked and found (when nothing bad is left).

    Raises
    ------
    ParameterError
        `path` is no output this library can verify, or a repair is asked of an output
        without a stored, repeatable call.
    StorageError
        Bad chunks are left (after the repair, if asked); the message names them.

    See Also
    --------
    bioimage_tasks.verify.verify : the same check without Prefect.

    Examples
    --------
    ```python
    from flows import verify_flow

    verify_flow.serve(  # every Sunday night
        name="weekly-verify",
        cron="0 3 * * 0",
        parameters={"path": "/data/ome/sample1.ome.zarr", "repair": True},
    )
    ```
    """
    report = verify(path, storage_options, repair)
    logger = get_run_logger()
    for line in report.lines():
        logger.warning(line)
    logger.info(report.summary())
    table = [
        "",
        "| chunk | problem | detail |",
        "|---|---|---|",
        *(f"| {b.where} | {b.kind} | {b.detail} |" for b in report.bad),
    ]
    markdown = "\n".join([report.summary(), *(table if report.bad else [])])
    publish_summary(markdown, key="verify-summary")
    if not report.ok:
        more = ", ..." if len(report.bad) > 10 else ""
        shown = ", ".join(b.where for b in report.bad[:10]) + more
        raise StorageError(
            f"{len(report.bad)} bad chunks in {path}: {shown}; verify_flow(..., "
            "repair=True) rewrites them from the call that wrote the output"
        )
    return report
