"""Prefect flows of bioimage-tasks."""

from flows.convert import convert_flow
from flows.copying import copy_flow
from flows.downsample import downsample_flow
from flows.pyramid import pyramid_flow
from flows.verify import verify_flow

__all__ = ["convert_flow", "copy_flow", "downsample_flow", "pyramid_flow", "verify_flow"]
