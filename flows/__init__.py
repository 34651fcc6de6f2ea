"""Prefect flows of bioimage-tasks."""

from flows.copying import copy_flow
from flows.downsample import downsample_flow
from flows.pyramid import pyramid_flow
from flows.verify import verify_flow

__all__ = ["copy_flow", "downsample_flow", "pyramid_flow", "verify_flow"]
