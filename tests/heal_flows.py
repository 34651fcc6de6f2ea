"""Test-only flow for the self-healing automation: `downsample_flow` whose input fails a chosen
read a set number of times (counted in marker files, so the count survives across flow runs and
processes), to make a deployment run end with blocks failed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from bioimage_tasks.io import as_source
from bioimage_tasks.naming import flow_run_namer
from bioimage_tasks.prefect.flow_class import blockwise_flow
from flows import downsample_flow


class FailingReads:
    """The source at `path`, except that the read starting at `start` raises OSError its first
    `times` times (each failure leaves a file in `markers`)."""

    def __init__(self, path: str, start: Sequence[int], times: int, markers: str):
        self.inner, self.start, self.times, self.markers = (
            as_source(path),
            tuple(start),
            times,
            markers,
        )
        self.name = path

    shape = property(lambda self: self.inner.shape)
    dtype = property(lambda self: self.inner.dtype)
    write_unit = property(lambda self: self.inner.write_unit)

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()  # the same data

    def __getitem__(self, key):
        if tuple(k.start for k in key) == self.start:
            os.makedirs(self.markers, exist_ok=True)
            if len(os.listdir(self.markers)) < self.times:
                open(os.path.join(self.markers, uuid.uuid4().hex), "w").close()
                raise OSError(f"injected read failure at {self.start}")
        return self.inner[key]


@blockwise_flow("flaky-downsample", flow_run_namer("flaky-downsample"))
def flaky_downsample(
    input: str,
    scale_factor: int,
    output: str,
    *,
    method: str = "mean",
    block_shape: Sequence[int] | None = None,
    job_config: Any = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    fail_at: Sequence[int] = (),
    fail_times: int = 1,
    markers: str = "",
) -> Any:
    """`downsample_flow.fn` in this flow run (so its events belong to this deployment's run)."""
    source = FailingReads(input, fail_at, fail_times, markers)
    downsample_flow.fn(
        source,
        scale_factor,
        output,
        method=method,
        block_shape=block_shape,
        job_config=job_config,
        block_ids=block_ids,
        resume_from=resume_from,
    )
    return output
