"""The Prefect flow class of our flows: a direct call skips Prefect's flow-run heartbeat, which
costs about 1 s per call (its thread sleeps in 1 s steps and is joined when the flow ends), unless
the user chose a heartbeat frequency; a top-level call reads the default result storage once
instead of three times, with the API client the process's calls share (client.py). Deployment
runs (workers, `serve`) start flows through Prefect's engine, not through a call, and keep
Prefect's own behaviour."""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun
from prefect.context import (
    FlowRunContext,
    SettingsContext,
    TaskRunContext,
    get_settings_context,
)
from prefect.futures import PrefectFuture
from prefect.results import should_persist_result
from prefect.states import State
from prefect.utilities.annotations import BaseAnnotation
from prefect.utilities.callables import get_call_parameters
from prefect.utilities.collections import visit_collection

from bioimage_tasks.prefect.client import api_client_context, runs_named

CALL_OPTIONS = ("return_state", "wait_for")  # Flow.__call__'s own keywords, not parameters
HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def heartbeat_chosen() -> bool:
    """Whether the environment or the active Prefect profile sets a heartbeat frequency."""
    profile = get_settings_context().profile.settings
    return any(name in os.environ for name in HEARTBEAT_SETTINGS) or any(
        setting.name in HEARTBEAT_SETTINGS for setting in profile
    )


class BlockwiseFlow(Flow):
    """A Prefect flow whose direct calls run without the per-call heartbeat cost and with one read
    of the default result storage (see module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            if not heartbeat_chosen():
                stack.enter_context(settings_without_heartbeat())
            flow: Flow = self
            if FlowRunContext.get() is None and TaskRunContext.get() is None:
                stack.enter_context(api_client_context())  # the process's client (client.py)
                stack.enter_context(runs_named(self.name, early_run_name(self, args, kwargs)))
                flow = with_default_results(self)
            return Flow.__call__(flow, *args, **kwargs)


def early_run_name(flow: Flow, args: tuple, kwargs: dict[str, Any]) -> str | None:
    """The name Prefect's engine gives a direct call's run (`flow_run_name` with the call's
    parameters), known before the run is created; None where it is not (no custom name, a
    parameter Prefect resolves first, or a failing name function: the engine then names the
    run itself, as always)."""
    if not callable(flow.flow_run_name):
        return None
    given = {name: value for name, value in kwargs.items() if name not in CALL_OPTIONS}
    try:
        parameters = get_call_parameters(flow.fn, args, given)
        if not resolved_as_given(parameters):
            return None
        placeholder = FlowRun(flow_id=uuid.uuid4(), name="", parameters=parameters)
        with FlowRunContext.model_construct(flow=flow, flow_run=placeholder, parameters=parameters):
            name = flow.flow_run_name()
    except Exception:  # noqa: BLE001 - the engine names the run (and reports the error)
        return None
    return name if isinstance(name, str) else None


def resolved_as_given(values: Any) -> bool:
    """Whether Prefect passes `values` to the flow as they are: no future, state or annotation
    (quote, allow_failure) inside, which Prefect resolves before the run is named."""
    found: list[Any] = []

    def visit(value: Any) -> Any:
        if isinstance(value, (PrefectFuture, State, BaseAnnotation)):
            found.append(value)
        return value

    visit_collection(values, visit_fn=visit, return_data=False, max_depth=-1)
    return not found


def with_default_results(flow: Flow) -> Flow:
    """`flow` (a copy) with the result storage and persistence Prefect would choose for a
    top-level run of it, read once: the settings' default block, else the server's default
    storage, else the local storage folder; results persisted if the settings say so or a
    default storage is configured. Prefect itself reads the server's default three times a run
    (begin, run context, persistence: ~5-20 ms each, and server time). A flow with its own
    storage, or a Prefect without these internals, is returned as it is."""
    if flow.result_storage is not None:
        return flow
    try:
        from prefect.results import _DefaultResultStorageSource, _get_default_result_storage

        default = _get_default_result_storage()
        local = default.source is _DefaultResultStorageSource.LOCAL_STORAGE_PATH
    except (ImportError, AttributeError):  # internals of prefect 3.8: another version decides
        return flow
    chosen = copy.copy(flow)
    # a folder as a Path (Prefect makes the same LocalFileSystem of it; an unsaved block is refused)
    chosen.result_storage = Path(default.storage.basepath) if local else default.storage
    if chosen.persist_result is None:
        chosen.persist_result = should_persist_result() or not local
    return chosen


def settings_without_heartbeat() -> SettingsContext:
    """The current settings with `flows.heartbeat_frequency` None, as a context to enter. A copy
    of the models, not `temporary_settings`, which re-validates every setting (~90 ms)."""
    context = get_settings_context()
    flows = context.settings.flows.model_copy(update={"heartbeat_frequency": None})
    return SettingsContext(
        profile=context.profile, settings=context.settings.model_copy(update={"flows": flows})
    )


def blockwise_flow(
    name: str, flow_run_name: Callable[[], str]
) -> Callable[[Callable[..., Any]], BlockwiseFlow]:
    """`@flow(name=..., flow_run_name=...)` for our flows: a BlockwiseFlow whose parameters are
    checked by the flow itself (with errors that name them), not by pydantic."""
    return lambda fn: BlockwiseFlow(
        fn, name=name, flow_run_name=flow_run_name, validate_parameters=False
    )
