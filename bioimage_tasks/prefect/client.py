"""One Prefect API client per process and API for our flows' direct calls. Prefect opens a new
client for every top-level flow call: a TLS context loaded from certifi (~20 ms CPU, even for an
http:// API), a CSRF token request and a new connection. Our calls share one client per set of
API settings instead, opened on first use and never closed by a call, so concurrent calls from
several threads need no reference count (httpx's client is safe to share between threads). A
change of API URL, key or client settings (another server) gets a client of its own; a restarted
server at the same URL is reconnected by httpx and Prefect's retries. Without an API URL (the
ephemeral server) every call keeps Prefect's own client. The client also registers each flow
once instead of before every run, and creates a run with the name the engine would give it
right after (`runs_named`): two requests (~10-20 ms and two server writes) fewer a call."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.context import ContextModel, SyncClientContext
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import get_current_settings

_LOCK = threading.Lock()
_CLIENTS: dict[tuple[Any, ...], SharedSyncClient] = {}


class SharedSyncClient(SyncPrefectClient):
    """A sync Prefect client that stays open for the process: entering and leaving it, as
    Prefect's code does around every use, counts nothing; `close` ends it. It registers each
    flow (`POST /flows/`, which Prefect sends before every flow run it creates) once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flow_registrations: dict[tuple[str, str], Any] = {}  # (name, request): answer
        self.named_runs: dict[Any, str] = {}  # flow run id: the name it was created with

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        flow = kwargs.get("json") if method == "POST" and path == "/flows/" else None
        if not isinstance(flow, dict) or args or kwargs.keys() != {"json"}:
            return super().request(method, path, *args, **kwargs)
        key = (flow.get("name"), json.dumps(flow, sort_keys=True))
        known = self.flow_registrations.get(key)
        if known is None:  # an error raises: nothing is kept
            known = self.flow_registrations[key] = super().request(method, path, **kwargs)
        return known

    def create_flow_run(self, flow: Any, *args: Any, **kwargs: Any) -> Any:
        """Prefect's, with the run's name if the call knows it already (`runs_named`)."""
        named = _RUN_NAME.get()
        if named is None or named[0] != getattr(flow, "name", None) or args:
            return self.create_flow_run_once_registered(flow, *args, **kwargs)
        if kwargs.get("name") is not None or kwargs.get("parent_task_run_id") is not None:
            return self.create_flow_run_once_registered(flow, **kwargs)
        run = self.create_flow_run_once_registered(flow, **(kwargs | {"name": named[1]}))
        self.named_runs[run.id] = named[1]
        return run

    def set_flow_run_name(self, flow_run_id: Any, name: str) -> Any:
        """Prefect's, without a request when the run was created with that name (the engine
        renames every run of a flow with a `flow_run_name`: a request, ~4-10 ms)."""
        if self.named_runs.pop(flow_run_id, None) == name:
            return httpx.Response(204)
        return super().set_flow_run_name(flow_run_id, name)

    def create_flow_run_once_registered(self, flow: Any, *args: Any, **kwargs: Any) -> Any:
        """Prefect's `create_flow_run`, registering the flow again if the server refuses the
        id this client kept (the flow was deleted since)."""
        try:
            return super().create_flow_run(flow, *args, **kwargs)
        except PrefectHTTPStatusError as error:
            name = getattr(flow, "name", None)
            kept = [key for key in list(self.flow_registrations) if key[0] == name]
            if not kept or not 400 <= error.response.status_code < 500:
                raise
            for key in kept:
                self.flow_registrations.pop(key, None)
            return super().create_flow_run(flow, *args, **kwargs)

    def __enter__(self) -> SharedSyncClient:
        if self.closed:
            raise RuntimeError("this shared Prefect client was closed")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    @property
    def closed(self) -> bool:
        return getattr(self, "_closed", False)

    def open(self) -> SharedSyncClient:
        SyncPrefectClient.__enter__(self)
        return self

    def close(self) -> None:
        if not self.closed:
            SyncPrefectClient.__exit__(self, None, None, None)


class SharedClientContext(SyncClientContext):
    """Prefect's sync client context holding the shared client: entering it only makes the
    client current (for `get_client(sync_client=True)` and the engines), leaving it closes
    nothing."""

    def __init__(self, client: SharedSyncClient) -> None:
        ContextModel.__init__(self, client=client)

    def __enter__(self) -> SharedClientContext:
        return ContextModel.__enter__(self)

    def __exit__(self, *exc_info: Any) -> None:
        ContextModel.__exit__(self, *exc_info)


_RUN_NAME: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "bioimage-tasks-run-name", default=None
)


@contextlib.contextmanager
def runs_named(flow_name: str, run_name: str | None) -> Iterator[None]:
    """Within: the shared client creates top-level runs of the flow `flow_name` already named
    `run_name` (None: as Prefect does), so the engine's rename to that name sends nothing."""
    token = _RUN_NAME.set(None if run_name is None else (flow_name, run_name))
    try:
        yield
    finally:
        _RUN_NAME.reset(token)


def _secret(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def settings_key() -> tuple[Any, ...]:
    """What a client is built from: the process, the API settings and the client settings."""
    settings = get_current_settings()
    api = settings.api
    return (
        os.getpid(),
        api.url,
        _secret(api.auth_string),
        _secret(api.key),
        api.tls_insecure_skip_verify,
        str(api.ssl_cert_file),
        api.enable_http2,
        api.request_timeout,
        settings.client.model_dump_json(),
        settings.testing.unit_test_mode,
    )


def shared_client() -> SharedSyncClient | None:
    """This process's open client for the current API settings (made on first use, as
    `get_client(sync_client=True)` makes one, and checked against the server's API version
    once); None without an API URL."""
    settings = get_current_settings()
    if not settings.api.url:
        return None
    key = settings_key()
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None or client.closed:
            client = SharedSyncClient(
                settings.api.url,
                auth_string=_secret(settings.api.auth_string),
                api_key=_secret(settings.api.key),
            ).open()
            if settings.client.server_version_check_enabled:
                client.raise_for_api_version_mismatch_once()
            _CLIENTS[key] = client
    return client


def api_client_context() -> contextlib.AbstractContextManager[Any]:
    """A context in which Prefect uses the shared client: the current client context if there
    is one, the shared client's if an API URL is set, else Prefect's own new client."""
    if SyncClientContext.get() is not None:
        return contextlib.nullcontext()
    client = shared_client()
    return SyncClientContext.get_or_create() if client is None else SharedClientContext(client)


def _forget_after_fork() -> None:
    """A forked child makes clients of its own (its parent's connections are not its own, and
    the lock may have been held by another thread)."""
    global _LOCK
    _LOCK = threading.Lock()
    _CLIENTS.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def close_shared_clients() -> None:
    """Close every shared client (at exit; a later call opens a new one)."""
    with _LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()
