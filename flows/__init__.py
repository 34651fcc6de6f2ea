"""Prefect flows of bioimage-tasks."""

from flows.copying import copy_flow
from flows.downsample import downsample_flow

__all__ = ["copy_flow", "downsample_flow"]
