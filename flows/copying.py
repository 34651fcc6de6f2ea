"""`copy_flow`: block-wise copy between formats (the plain `bioimage_tasks.copy` as a Prefect
flow). The module is not named `copy`: Prefect puts flows/ on sys.path when it loads a
deployment's entrypoint, and a flows/copy.py would then shadow the standard library's copy."""

from bioimage_tasks.prefect.flows import copy_flow

__all__ = ["copy_flow"]
