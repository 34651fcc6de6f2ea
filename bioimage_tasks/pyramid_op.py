"""The OME-Zarr pyramid as an operation of the one engine: checked parameters, the levels'
geometry and metadata, the level arrays, and the stages (pyramid_engine.py) that write them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bioimage_tasks.chunk_manifest import stamp_writes
from bioimage_tasks.engine import Run, Stage
from bioimage_tasks.io import (
    ContainerPath,
    OutputOptions,
    UrlPath,
    open_group,
    storage_place,
)
from bioimage_tasks.io.local_zarr import update_attributes
from bioimage_tasks.io.source import physical_of
from bioimage_tasks.multiscale import (
    axes_metadata,
    labels_group_attributes,
    level_transform,
    multiscales_attributes,
    omero_channels,
)
from bioimage_tasks.operations import measure_range
from bioimage_tasks.pyramid_engine import (
    GroupOutput,
    LevelRow,
    Sink,
    pyramid_stages,
    pyramid_summary,
    resize_stages,
)
from bioimage_tasks.pyramid_formats import PrecomputedOutput
from bioimage_tasks.pyramid_levels import LevelSpec, level_array, staging_array
from bioimage_tasks.pyramid_plan import PyramidPlan
from bioimage_tasks.records import run_key
from bioimage_tasks.resampling import ResizedSource
from bioimage_tasks.runners import RunnerConfig
from bioimage_tasks.throttle import throttle_writes


@dataclass(eq=False)
class PyramidOperation:
    """Write `source` as an OME-Zarr multiscale image at `group_path` (see api.pyramid)."""

    input: Any
    source: Any
    group_path: ContainerPath | UrlPath
    spec: LevelSpec
    method: str
    order: int
    anti_aliasing: bool
    options: OutputOptions
    ngff_version: str
    name: str | None
    labels: bool
    config: RunnerConfig
    num_workers: int
    details: dict[str, Any]
    plan: PyramidPlan | None = None
    reuse_s0: bool = False
    job_type: str = "local"
    kind: str = "pyramid"
    value_range: tuple[float, float] | None = None
    sinks: list[Sink | None] = field(default_factory=list)
    rows: list[LevelRow] = field(default_factory=list)
    group: Any = None
    group_directory: Any = None
    stage_list: list[Stage] = field(default_factory=list)

    def prepare(self, edge: Any) -> None:
        """Create the group and the level arrays; measure the value range a resize clips to."""
        spec = self.spec
        if isinstance(self.group_path, PrecomputedOutput):
            self.group, self.group_directory = self.group_path.group()
        else:
            self.group, self.group_directory = open_group(
                self.group_path, 2 if self.ngff_version == "0.4" else 3
            )
        arrays = [
            None
            if level == 0 and self.reuse_s0
            else level_array(
                self.group_path,
                level,
                shape,
                self.source.dtype,
                spec.layouts[level],
                spec.geometry.axes,
                self.options,
            )
            for level, shape in enumerate(spec.shapes)
        ]
        for array in arrays:  # opened together now, not one by one in the first write
            getattr(array, "start_open", lambda: None)()
        self.sinks = [
            None if a is None else throttle_writes(stamp_writes(a), self.config.write_limit)
            for a in arrays
        ]
        self.rows = [
            LevelRow(
                level,
                shape,
                spec.layouts[level][1] or spec.layouts[level][0],
                factors,
                "existing" if arrays[level] is None else "from the base",
            )
            for level, (shape, factors) in enumerate(zip(spec.shapes, spec.cumulative))
        ]
        if not spec.level_factors:
            edge.log("pyramid %s: %s", self.group_path, self.details.get("levels"))
        if self.plan is None and any(
            ResizedSource(self.source, s, self.order, self.anti_aliasing).clips
            for s in spec.shapes[1:]
        ):
            self.value_range = measure_range(edge, self.source, self.num_workers)

    def places(self) -> list[Any]:
        return [self.group_directory, *(storage_place(s) for s in self.sinks if s is not None)]

    def computation(self) -> str:
        fingerprint = getattr(self.source, "fingerprint", lambda: None)()
        if fingerprint is None:
            return f"unkeyed-{uuid.uuid4().hex}"
        return run_key(
            {
                "pyramid": self.method,
                "order": self.order,
                "anti_aliasing": self.anti_aliasing,
                "factors": self.spec.level_factors,
                "input": fingerprint,
            }
            | self.options.fingerprint()
        )

    def check_records(self, epoch: str | None) -> None:
        """A pyramid takes no `resume_from`: nothing to check."""

    def stages(self, epoch: str | None) -> list[Stage]:
        if self.plan is None:
            self.stage_list = resize_stages(
                self.source,
                self.spec.shapes,
                self.order,
                self.anti_aliasing,
                self.value_range,
                self.sinks,
                self.config.memory_budget,
                epoch,
                self.rows,
            )
            return self.stage_list
        staging = {
            level: throttle_writes(stamp_writes(self.staging(level)), self.config.write_limit)
            for level in self.plan.staged
        }
        for level in range(1, len(self.spec.shapes)):
            self.rows[level].how = (
                "assembled from staged regions" if level in staging else "from the regions' read"
            )
        self.details["regions"] = (
            f"{self.plan.grid.n_blocks} of {self.plan.region}, tiles of {self.plan.tile}"
        )
        self.stage_list = pyramid_stages(
            self.source,
            self.plan,
            self.method,
            self.sinks,
            staging,
            self.group_directory,
            epoch,
            self.rows,
        )
        return self.stage_list

    def staging(self, level: int) -> Sink:
        """Level `level`'s staging array (its regions' parts, one chunk each)."""
        return staging_array(
            self.group_path,
            level,
            self.spec.shapes[level],
            self.source.dtype,
            self.plan.staging_chunks(level),
        )

    def run(self) -> Run:
        first = self.stage_list[0].job.records if self.stage_list else None
        output = GroupOutput(
            str(self.group_path), str(getattr(self.group_directory, "url", self.group_directory))
        )
        return Run(
            self.kind,
            output,
            self.details,
            self.num_workers,
            self.config.blocks_per_task,
            first.key if first is not None else None,
            pyramid_summary(self.rows, self.stage_list),
        )

    def complete(self) -> str:
        """Write the multiscales metadata (and the labels group's list); return the group's path."""
        if isinstance(self.group_path, PrecomputedOutput):
            return self.group_path.complete()
        spec, group_path, geometry = self.spec, self.group_path, self.spec.geometry
        transforms = [
            level_transform(
                self.method, geometry.voxel_size, geometry.origin, f, spec.shapes[0], shape
            )
            for f, shape in zip(spec.cumulative, spec.shapes)
        ]
        label_name = group_path.key.rsplit("/", 1)[-1]
        update_attributes(
            self.group,
            multiscales_attributes(
                self.ngff_version,
                self.name or label_name or "image",
                axes_metadata(geometry.axes, geometry.units),
                transforms,
                self.method,
                label=self.labels,
                omero=self.omero(),
            ),
        )
        if self.labels:
            parent = replace(group_path, key=group_path.key.rsplit("/", 1)[0])
            labels_group, _ = open_group(parent, 2 if self.ngff_version == "0.4" else 3)
            labels_group.attrs.update(
                labels_group_attributes(self.ngff_version, dict(labels_group.attrs), label_name)
            )
        return str(group_path)

    def omero(self) -> dict[str, Any] | None:
        """Channel names of the input (vendor files) as NGFF `omero`, when its c axis is kept."""
        names, axes = physical_of(self.source).channel_names, self.spec.geometry.axes
        if (
            self.labels
            or not names
            or "c" not in axes
            or len(names) != self.spec.shapes[0][axes.index("c")]
        ):
            return None
        dtype = np.dtype(self.source.dtype)
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        return omero_channels(names, (info.min, info.max) if info else (0, 1))
