"""Our flow class: direct calls run without Prefect's flow-run heartbeat (whose thread is joined
at the end of every call, ~1 s), unless the user chose a heartbeat frequency; read the default
result storage once, while honouring a default the settings or the server configure; share one
API client per process and API settings; create runs already named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.context import FlowRunContext
from prefect.filesystems import LocalFileSystem
from prefect.settings import (
    PREFECT_API_REQUEST_TIMEOUT,
    PREFECT_API_URL,
    PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK,
    get_current_settings,
    temporary_settings,
)
from prefect.utilities.annotations import quote

from bioimage_tasks.prefect.client import SharedSyncClient, close_shared_clients
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


def result_probe() -> BlockwiseFlow:
    """A flow of our class that returns the result storage and persistence its run got."""

    def probe() -> tuple[Any, bool]:
        context = FlowRunContext.get()
        return context.result_store.result_storage, context.persist_result

    return blockwise_flow("result-probe", lambda: "probe")(probe)


def count_default_storage_reads(monkeypatch) -> list[int]:
    """Count the API reads of the server's default result storage (the real call is made)."""
    reads = [0]
    real = SyncPrefectClient.read_server_default_result_storage

    def counted(self):
        reads[0] += 1
        return real(self)

    monkeypatch.setattr(SyncPrefectClient, "read_server_default_result_storage", counted)
    return reads


@pytest.mark.usefixtures("prefect_server")
def test_a_direct_call_reads_the_default_result_storage_once(monkeypatch):
    reads = count_default_storage_reads(monkeypatch)
    storage, persist = result_probe()()
    assert reads[0] == 1  # Prefect alone reads it three times a run
    settings = get_current_settings()
    assert Path(storage.basepath) == Path(settings.results.local_storage_path)
    assert persist is settings.results.persist_by_default


@pytest.mark.usefixtures("prefect_server")
def test_a_server_default_result_storage_is_honoured(tmp_path, rng):
    image = rng.integers(0, 256, (20, 24, 16), dtype=np.uint8)
    lab = LocalFileSystem(basepath=str(tmp_path / "lab-results"))
    block_id = lab.save("lab-results-test", overwrite=True)
    with get_client(sync_client=True) as client:
        client.update_server_default_result_storage(block_id)
        try:
            storage, persist = result_probe()()
            output = downsample_flow(image, 2, f"{tmp_path}/out.zarr/s1", method="mean")
        finally:
            client.clear_server_default_result_storage()
    assert storage._block_document_id == block_id and persist is True
    expected = ts.downsample(ts.array(image), [2, 2, 2], "mean").read().result()
    np.testing.assert_array_equal(output[:], expected)
    assert len(os.listdir(tmp_path / "lab-results")) >= 2  # both flows' results were stored there


@pytest.mark.usefixtures("prefect_server")
def test_a_settings_default_result_storage_is_honoured(tmp_path, monkeypatch):
    LocalFileSystem(basepath=str(tmp_path / "settings-results")).save(
        "settings-results-test", overwrite=True
    )
    reads = count_default_storage_reads(monkeypatch)
    slug = "local-file-system/settings-results-test"
    with temporary_settings({PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: slug}):
        storage, persist = result_probe()()
    assert reads[0] == 0  # the settings choose: the server is not asked
    assert Path(storage.basepath) == tmp_path / "settings-results" and persist is True


@pytest.mark.usefixtures("prefect_server")
def test_a_parent_flows_result_storage_is_kept_by_ours(tmp_path):
    @flow(result_storage=tmp_path / "parent-results", persist_result=False)
    def parent() -> tuple[Any, bool]:
        return result_probe()()

    storage, _ = parent()
    assert Path(storage.basepath) == tmp_path / "parent-results"


def client_probe() -> BlockwiseFlow:
    """A flow of our class that returns the API client its run used."""
    return blockwise_flow("client-probe", lambda: "probe")(lambda: get_client(sync_client=True))


@pytest.mark.usefixtures("prefect_server")
def test_direct_calls_share_one_api_client_per_api_settings():
    probe = client_probe()
    first, second = probe(), probe()
    assert first is second and isinstance(first, SharedSyncClient) and not first.closed
    with temporary_settings({PREFECT_API_REQUEST_TIMEOUT: 61.0}):  # other settings: other client
        other = probe()
    assert other is not first and other._client.timeout.read == 61.0
    close_shared_clients()  # as at exit: the clients are closed, the next call opens a new one
    assert first.closed and other.closed
    third = probe()
    assert third is not first and not third.closed and third.hello().status_code == 200


@pytest.mark.usefixtures("prefect_server")
def test_a_flow_deleted_on_the_server_is_registered_again():
    """The shared client registers a flow once; if the server forgot it, the next call
    registers it again instead of failing."""
    probe = blockwise_flow("registration-probe", lambda: "probe")(lambda: FlowRunContext.get())
    first = probe().flow_run
    with get_client(sync_client=True) as client:
        client.delete_flow(first.flow_id)
        second = probe().flow_run
        assert client.read_flow_run(second.id).state.is_completed()
    assert second.flow_id != first.flow_id


def count_renames(monkeypatch) -> list[str]:
    """The names Prefect's client is asked to rename runs to (the real request is made)."""
    names: list[str] = []
    real = SyncPrefectClient.set_flow_run_name

    def counted(self, flow_run_id, name):
        names.append(name)
        return real(self, flow_run_id, name)

    monkeypatch.setattr(SyncPrefectClient, "set_flow_run_name", counted)
    return names


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("quoted", [False, True])
def test_a_run_is_created_with_its_name(monkeypatch, rng, quoted):
    """A direct call's run is created with its name (no rename request), unless a parameter is
    one Prefect resolves before it names the run (here `quote`): then Prefect renames it."""
    renames = count_renames(monkeypatch)
    image = rng.integers(0, 256, (8, 8, 8), dtype=np.uint8)
    state = downsample_flow(quote(image) if quoted else image, 2, return_state=True)
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(state.state_details.flow_run_id).name
    assert name == "downsample numpy(8, 8, 8) uint8 x2 -> memory"
    assert state.is_completed() and renames == ([name] if quoted else [])
