"""`convert_flow`: every file a pattern matches ('in/*.czi') as `<output_dir>/<name>.ome.zarr`,
each file's pyramid a child flow run, resumable (the plain `bioimage_tasks.convert` as a flow)."""

from bioimage_tasks.prefect.flows import convert_flow

__all__ = ["convert_flow"]
