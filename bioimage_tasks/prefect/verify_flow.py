"""`verify_flow`: `bioimage_tasks.verify.verify` as a Prefect flow, e.g. on a schedule: a markdown
artifact lists the bad chunks, and the run fails while any is left (after `repair`, if asked)."""

from __future__ import annotations

from prefect import get_run_logger

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
def verify_flow(
    path: str, storage_options: StorageOptions | dict | None = None, repair: bool = False
) -> VerifyReport:
    """Check every stored chunk of the output array or pyramid group at `path` against its chunk
    manifests (missing, unreadable, changed, unrecorded); with `repair`, rewrite the bad ones by
    re-running the call that wrote the output, then check again. Returns the report; raises
    StorageError, naming the bad chunks, when some are left."""
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
