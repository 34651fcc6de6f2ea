"""Our flow class: direct calls run without Prefect's flow-run heartbeat (whose thread is joined
at the end of every call, ~1 s), unless the user chose a heartbeat frequency."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, get_current_settings

from bioimage_tasks.prefect.flow_class import (
    BlockwiseFlow,
    blockwise_flow,
    heartbeat_chosen,
    settings_without_heartbeat,
)
from flows import copy_flow, downsample_flow, pyramid_flow


def test_our_flows_are_blockwise_flows():
    assert all(isinstance(f, BlockwiseFlow) for f in (downsample_flow, copy_flow, pyramid_flow))


def test_settings_without_heartbeat_change_nothing_else():
    before = get_current_settings()
    with settings_without_heartbeat():
        inside = get_current_settings()
        assert inside.flows.heartbeat_frequency is None
        assert PREFECT_API_URL.value() == before.api.url
        assert inside.flows.default_retries == before.flows.default_retries
    assert get_current_settings().flows.heartbeat_frequency == before.flows.heartbeat_frequency


@pytest.mark.parametrize(
    "variable", ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"]
)
def test_a_chosen_heartbeat_is_kept(monkeypatch, variable):
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    assert not heartbeat_chosen()
    monkeypatch.setenv(variable, "60")
    assert heartbeat_chosen()


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("chosen", [False, True])
def test_a_direct_call_runs_with_the_heartbeat_it_should(monkeypatch, chosen):
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    if chosen:
        monkeypatch.setenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", "60")
    probe = blockwise_flow("heartbeat-probe", lambda: "probe")(
        lambda: get_current_settings().flows.heartbeat_frequency
    )
    assert probe() == (get_current_settings().flows.heartbeat_frequency if chosen else None)
