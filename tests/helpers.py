"""Test-only sources and process helpers, importable by Dask workers (local and SLURM)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.sources import as_source


@dataclass(frozen=True)
class SlowSource:
    """A file-backed source that sleeps on every read, so a run lasts long enough to kill
    workers in the middle of it."""

    path: str
    delay: float

    def _inner(self):
        return as_source(self.path)

    shape = property(lambda self: self._inner().shape)
    dtype = property(lambda self: self._inner().dtype)
    write_unit = property(lambda self: self._inner().write_unit)

    @property
    def source(self):
        """The data read slowly; with `input_interval` this makes block signatures see through
        the delay (signatures.py), so a rerun from the path itself resumes."""
        return self._inner()

    def input_interval(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        return start, stop

    def fingerprint(self) -> dict:
        return self._inner().fingerprint()  # the same data, read slowly

    def __getitem__(self, key) -> np.ndarray:
        time.sleep(self.delay)
        return self._inner()[key]


def wait_for(condition, timeout: float, interval: float = 0.2):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def slurm_jobs(name_prefix: str = "bioimage-tasks") -> list[str]:
    """Ids of this project's SLURM jobs still known to squeue (pending, running or completing)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(name_prefix)]


def records_dir(array_dir: str) -> str:
    """The single run-key folder of block records under an output array's folder."""
    base = os.path.join(array_dir, ".bioimage-tasks", "blocks")
    (key,) = os.listdir(base)
    return os.path.join(base, key)


def record_times(array_dir: str) -> dict[int, float]:
    """When each recorded block of the output's single run key was last written (s since the epoch)."""
    from bioimage_tasks.records import BlockRecords

    return {block_id: entry.time_ns / 1e9 for block_id, entry in BlockRecords(records_dir(array_dir)).entries().items()}


def executed_since(array_dir: str, started: float) -> set[int]:
    """Blocks a run starting at `started` executed, from the output's own block records."""
    return {block_id for block_id, t in record_times(array_dir).items() if t >= started}
