"""The flows: each is the plain operation builder (api.py) run by the Prefect edge, so a flow
has exactly the builder's parameters and documentation and validates nothing twice. `flows/`
exposes them to users and deployments; the command line's `--prefect` runs take them from here."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

from bioimage_tasks.api import copy_operation, downsample_operation, pyramid_operation
from bioimage_tasks.naming import flow_run_namer
from bioimage_tasks.prefect.edge import run_in_flow
from bioimage_tasks.prefect.flow_class import BlockwiseFlow, blockwise_flow


def _factor_text(parameters: dict[str, Any]) -> str:
    factor = parameters["scale_factor"]
    return "x" + ("x".join(str(f) for f in factor) if isinstance(factor, Sequence) else str(factor))


FLOWS: dict[str, tuple[Callable[..., Any], Callable[[], str]]] = {
    "downsample": (downsample_operation, flow_run_namer("downsample", detail=_factor_text)),
    "copy": (copy_operation, flow_run_namer("copy")),
    "pyramid": (pyramid_operation, flow_run_namer("pyramid", "output_group")),
}


@functools.cache
def flow_of(kind: str) -> BlockwiseFlow:
    """The flow of operation `kind`: its builder's checked operation, run in a flow run."""
    builder, namer = FLOWS[kind]

    @functools.wraps(builder)
    def body(*args: Any, **kwargs: Any) -> Any:
        return run_in_flow(builder(*args, **kwargs))

    body.__name__ = body.__qualname__ = f"{kind}_flow"
    # the builder's annotations as types, not strings that only its module's globals resolve:
    # Prefect builds the parameter schema and validation model from them
    body.__signature__ = inspect.signature(builder, eval_str=True)
    body.__annotations__ = typing.get_type_hints(builder)
    del body.__wrapped__  # Prefect finds a flow's entrypoint from its module: this one's `<kind>_flow`
    body.__module__ = __name__
    return blockwise_flow(kind, namer)(body)


downsample_flow = flow_of("downsample")
copy_flow = flow_of("copy")
pyramid_flow = flow_of("pyramid")
