"""Short human-readable names for inputs and outputs, for flow run names and logs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def describe(data: Any) -> str:
    """'raw.zarr/volume' for paths (last two parts), 'numpy(64, 64) uint8' for arrays.

    >>> describe("data/raw.zarr/volume"), describe(np.zeros((2, 3), np.uint8)), describe(None)
    ('raw.zarr/volume', 'numpy(2, 3) uint8', 'memory')
    """
    if data is None:
        return "memory"
    if isinstance(data, (str, os.PathLike)):
        return "/".join(os.fspath(data).rstrip("/").split("/")[-2:])
    if isinstance(data, np.ndarray):
        return f"numpy{data.shape} {data.dtype}"
    return getattr(data, "name", type(data).__name__)


def describe_source(data: Any, source: Any) -> str:
    """What was given and what it holds:
    'raw.zarr/volume (512, 512, 512) uint8 chunks (64, 64, 64)'."""
    return f"{describe(data)} {tuple(source.shape)} {source.dtype} chunks {source.write_unit}"


def flow_run_namer(
    kind: str,
    output_parameter: str = "output",
    detail: Callable[[dict[str, Any]], str] | None = None,
) -> Callable[[], str]:
    """A Prefect `flow_run_name` callable: '<kind> <input>[ <detail>] -> <output>' from the run's
    parameters, e.g. 'downsample raw.zarr/volume x2 -> raw.zarr/s1'."""

    def name() -> str:
        from prefect.runtime import flow_run

        parameters = flow_run.parameters
        middle = f" {detail(parameters)}" if detail is not None else ""
        return (
            f"{kind} {describe(parameters['input'])}{middle} -> "
            f"{describe(parameters.get(output_parameter))}"
        )

    return name
