"""`verify_flow`: `bioimage_tasks.verify.verify` as a Prefect flow, e.g. on a schedule (a
markdown artifact lists the bad chunks; the run fails while any is left)."""

from bioimage_tasks.prefect.verify_flow import verify_flow

__all__ = ["verify_flow"]
