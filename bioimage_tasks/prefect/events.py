"""Prefect events of our runs, so automations can react to what happened to a dataset:

- `bioimage-tasks.run.completed`: a run wrote everything it planned;
- `bioimage-tasks.run.failed`: a run ended with an error (blocks failed, no workers, ...);
- `bioimage-tasks.blocks.failed`: some blocks failed; the payload lists all failed `block_ids`
  and the first errors, so an automation can re-run exactly those blocks.

The resource of every event is the output array, named by a stable id
(`bioimage-tasks.array.<absolute path>`), so a lab can write one automation per dataset. Prefect
relates each event to the flow run that emitted it (and its flow, deployment and tags). The
resource label `bioimage-tasks.failures-in-a-row` counts this run and the failed runs just before
it (same deployment or flow, same `output`), which lets a trigger stop healing after N attempts.

`emit_run_events` knows nothing of block plans: any engine (block-wise runs, the pyramid) calls
it with plain values."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from prefect.context import FlowRunContext
from prefect.events import Event, emit_event
from prefect.exceptions import EventTooLarge
from prefect.logging import get_logger

PREFIX = "bioimage-tasks"
RUN_COMPLETED = f"{PREFIX}.run.completed"
RUN_FAILED = f"{PREFIX}.run.failed"
BLOCKS_FAILED = f"{PREFIX}.blocks.failed"
FAILURES_LABEL = f"{PREFIX}.failures-in-a-row"
FIRST_ERRORS = 5  # errors carried in a blocks-failed payload
ERROR_CHARS = 500  # characters kept of each error
HISTORY = 50  # earlier runs looked at when counting failures in a row

logger = get_logger(__name__)


def output_resource_id(output_path: str | os.PathLike | None) -> str:
    """The stable `prefect.resource.id` of an output: its absolute path, or `in-memory`."""
    return f"{PREFIX}.array.{_absolute(output_path) or 'in-memory'}"


def _absolute(path: str | os.PathLike | None) -> str | None:
    return os.path.abspath(os.fspath(path)) if path is not None else None


def emit_run_events(
    kind: str,
    output_name: str,
    output_path: str | os.PathLike | None,
    run_key: str | None,
    outcome: str,
    failed_block_ids: Sequence[int] = (),
    first_errors: Mapping[int, str] | None = None,
    *,
    error: str | None = None,
    details: Mapping[str, Any] | None = None,
    n_failed: int | None = None,
) -> list[Event]:
    """Emit the events of a finished run of `kind` ("downsample", "copy", "pyramid", ...) into
    `output_path` (None: in memory), shown as `output_name`. `outcome` is "completed" or "failed";
    a failed run with `failed_block_ids` also emits blocks-failed, with `first_errors` (block id
    -> message). `n_failed` counts every failed block when `failed_block_ids` are only the
    first few: the payload's `block_ids` is then null, so a heal re-runs the same call, which
    resumes every missing block. `details` go into every payload (e.g. blocks written). Returns
    the events sent (none without a Prefect API to send them to)."""
    if outcome not in ("completed", "failed"):
        raise ValueError(f"outcome must be 'completed' or 'failed', got {outcome!r}")
    failures = failures_in_a_row() if outcome == "failed" else 0
    resource = {
        "prefect.resource.id": output_resource_id(output_path),
        "prefect.resource.name": output_name,
        f"{PREFIX}.kind": kind,
        f"{PREFIX}.run-key": run_key or "",
        FAILURES_LABEL: str(failures),
    }
    common = {
        "kind": kind,
        "output": output_name,
        "output_path": _absolute(output_path),
        "run_key": run_key,
        **(details or {}),
    }
    if outcome == "completed":
        sent = [_emit(RUN_COMPLETED, resource, common)]
    else:
        failed = sorted(failed_block_ids)
        total = len(failed) if n_failed is None else n_failed
        counts = {"failed": total, "failures_in_a_row": failures}
        sent = []
        if failed:
            errors = {
                str(b): str(m)[:ERROR_CHARS]
                for b, m in sorted((first_errors or {}).items())[:FIRST_ERRORS]
            }
            listed = (
                {"block_ids": failed}
                if total == len(failed)
                else {"block_ids": None, "block_ids_left_out": True}
            )
            sent.append(
                _emit(BLOCKS_FAILED, resource, common | counts | listed | {"first_errors": errors})
            )
        sent.append(
            _emit(RUN_FAILED, resource, common | counts | {"error": (error or "")[:ERROR_CHARS]})
        )
    return [e for e in sent if e is not None]


def emit_outcome_events(
    kind: str,
    sink: Any,
    run_key: str | None,
    error: BaseException | None,
    details: Mapping[str, Any] | None = None,
) -> list[Event]:
    """`emit_run_events` for a run into `sink` (an array source with `name` and `directory`)
    that ended with `error` (None: completed); a BlocksFailedError-like error (with `failures`,
    block id -> message) gives the failed block ids and first errors."""
    failures: Mapping[int, str] = getattr(error, "failures", None) or {}
    return emit_run_events(
        kind,
        getattr(sink, "name", "output"),
        getattr(sink, "directory", None),
        run_key,
        "completed" if error is None else "failed",
        sorted(failures),
        failures,
        error=None if error is None else f"{type(error).__name__}: {error}",
        details=details,
        n_failed=getattr(error, "n_failed", None),
    )


def _emit(name: str, resource: dict[str, str], payload: dict[str, Any]) -> Event | None:
    """Send one event; if it is over Prefect's size limit (about 200,000 failed block ids), send
    it without the id list (`block_ids_left_out: true`) rather than not at all."""
    try:
        return emit_event(name, resource=resource, payload=payload)
    except EventTooLarge:
        slim = {k: v for k, v in payload.items() if k != "block_ids"} | {"block_ids_left_out": True}
        return emit_event(name, resource=resource, payload=slim)


def failures_in_a_row() -> int:
    """1 + the number of failed runs just before this one: runs of the same deployment (or, for
    direct calls, the same flow) with the same `output` parameter, newest first, up to the last
    completed one. Flow runs are stored at once (events are persisted in batches), so a heal run
    that starts seconds after a failure counts it. 1 when there is no flow run or API to ask."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return 1
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowFilter,
        FlowFilterId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    run = context.flow_run
    output = str(run.parameters.get("output"))
    same_deployment = (
        DeploymentFilter(id=DeploymentFilterId(any_=[run.deployment_id]))
        if run.deployment_id
        else None
    )
    try:
        with get_client(sync_client=True) as client:
            earlier = client.read_flow_runs(
                flow_filter=FlowFilter(id=FlowFilterId(any_=[run.flow_id])),
                deployment_filter=same_deployment,
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(not_any_=[run.id]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.COMPLETED, StateType.FAILED])
                    ),
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=HISTORY,
            )
    except Exception as problem:  # noqa: BLE001 - an event without history beats no event
        logger.debug("could not read earlier flow runs to count failures in a row: %s", problem)
        return 1
    count = 1
    for previous in earlier:
        if str(previous.parameters.get("output")) != output:
            continue
        if previous.state_type != StateType.FAILED:
            break
        count += 1
    return count
