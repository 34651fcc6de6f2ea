"""The call that wrote an output, kept beside it for `verify --repair` (verify.py): each run
stores its operation and JSON-able parameters in `<output>/.bioimage-tasks/run.json` when it
starts (not how it ran: backend, workers), or why it cannot be repeated (data passed in memory
rather than as a path or URL)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.kv import Location, as_location
from bioimage_tasks.io.urls import is_url
from bioimage_tasks.records import RECORDS_DIR

RUN_FILE = "run.json"
_NOT_STORED = ("job_type", "job_config", "num_workers", "resume_from")  # how it ran, not what
_PATHS = ("input", "output", "output_group", "mask")


def record_call(place: Any, operation: str, parameters: dict[str, Any] | None) -> None:
    """Keep a run's call (`operation` and its `parameters`, as JSON) in
    `<place>/.bioimage-tasks/run.json` for `verify --repair`; written only when it changes (a
    finished rerun writes nothing), and not at all without parameters or a place."""
    if parameters is None or place is None:
        return
    call = describe_call(operation, parameters)
    data = json.dumps(call, sort_keys=True, indent=1).encode()
    folder = as_location(place).child(RECORDS_DIR)
    if folder.read(RUN_FILE) != data:
        folder.write(RUN_FILE, data)


def describe_call(operation: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a call: operation and parameters (not how it ran: backend, workers), and why it
    cannot be repeated, if so (data passed in memory rather than as a path or URL)."""
    stored, why_not = {}, None
    for name, value in parameters.items():
        if name in _NOT_STORED:
            continue
        try:
            stored[name] = _path_value(value) if name in _PATHS else _jsonable(value)
        except TypeError:
            kind = type(value).__name__
            why_not = why_not or f"{name} was given as a {kind} in memory, not as a path or URL"
    relative = any(
        n in _PATHS and isinstance(v, str) and not is_url(v) and not os.path.isabs(v)
        for n, v in stored.items()
    )
    call = {"operation": operation, "parameters": stored, "why_not": why_not}
    return call | ({"cwd": os.getcwd()} if relative else {})  # relative paths: from there


def _path_value(value: Any) -> str | None:
    """A path or URL parameter as a string (TypeError for data in memory)."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return None if value is None else os.fspath(value)
    raise TypeError(value)


def _jsonable(value: Any) -> Any:
    """`value` as JSON (dataclasses as dicts of their fields); TypeError if it has none."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    raise TypeError(value)


def stored_call(place: Location, path: str) -> dict[str, Any]:
    """The call kept in the output's run.json; ParameterError when there is none or it cannot be
    repeated."""
    data = place.child(RECORDS_DIR).read(RUN_FILE)
    if data is None:
        raise ParameterError(
            f"repair: {path} has no {RECORDS_DIR}/{RUN_FILE}, the call that wrote it (written by "
            "another tool or an older bioimage-tasks); rewrite it with the call that made it"
        )
    call = json.loads(data)
    if call.get("why_not"):
        raise ParameterError(
            f"repair: {path} cannot be rewritten from its stored call: {call['why_not']}; "
            "re-run that call yourself (finished blocks with intact files are skipped)"
        )
    return call
