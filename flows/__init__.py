"""Prefect flows of bioimage-tasks."""

from flows.copy import copy_flow
from flows.downsample import downsample_flow

__all__ = ["copy_flow", "downsample_flow"]
