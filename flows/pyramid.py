"""`pyramid_flow`: an OME-Zarr multiscale image (s0..sN) with exact per-level geometry, every
level written by the one engine in one flow run (the plain `bioimage_tasks.pyramid` as a flow)."""

from bioimage_tasks.prefect.flows import pyramid_flow

__all__ = ["pyramid_flow"]
