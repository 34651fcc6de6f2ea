"""The Prefect flow class of our flows: a direct call skips Prefect's flow-run heartbeat, which
costs about 1 s per call (its thread sleeps in 1 s steps and is joined when the flow ends), unless
the user chose a heartbeat frequency. Deployment runs (workers, `serve`) start flows through
Prefect's engine, not through a call, and keep their heartbeats."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.context import SettingsContext, get_settings_context

HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def heartbeat_chosen() -> bool:
    """Whether the environment or the active Prefect profile sets a heartbeat frequency."""
    profile = get_settings_context().profile.settings
    return any(name in os.environ for name in HEARTBEAT_SETTINGS) or any(
        setting.name in HEARTBEAT_SETTINGS for setting in profile
    )


class BlockwiseFlow(Flow):
    """A Prefect flow whose direct calls run without the per-call heartbeat cost (see module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if heartbeat_chosen():
            return super().__call__(*args, **kwargs)
        with settings_without_heartbeat():
            return super().__call__(*args, **kwargs)


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
