"""Block records: a small file per finished block, kept with the output, so a rerun knows exactly
which blocks are done. Records live under the output array's own directory, in a folder named by
the run key (operation, input, grid, mask and the output's identity token), so a record can never
vouch for a block of a different computation or of a deleted and recreated output."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

RECORDS_DIR = ".bioimage-tasks"
TOKEN_ATTRIBUTE = "bioimage_tasks_token"


def run_key(fingerprint: dict[str, Any]) -> str:
    """A short, stable hash of everything that decides the output of a run."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def executor() -> str:
    """Who is running this block: the SLURM job, else host and process."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-job:{job}" if job else f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class BlockRecords:
    """The record folder of one run key: `<array dir>/.bioimage-tasks/blocks/<key>/<block id>`."""

    directory: str

    @property
    def key(self) -> str:
        """The run key these records belong to."""
        return os.path.basename(self.directory)

    def mark_done(self, block_id: int) -> None:
        """Atomically record `block_id` as written (write a temporary file, then rename)."""
        os.makedirs(self.directory, exist_ok=True)
        payload = json.dumps({"executor": executor(), "time": time.time()})
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(handle, "w") as stream:
            stream.write(payload)
        os.replace(temporary, os.path.join(self.directory, str(block_id)))

    def done(self) -> set[int]:
        """Ids of the recorded blocks."""
        if not os.path.isdir(self.directory):
            return set()
        return {int(name) for name in os.listdir(self.directory) if name.isdigit()}

    def done_among(self, block_ids: list[int]) -> set[int]:
        """Which of `block_ids` are recorded: one stat each, so a batch's check does not grow with
        the whole volume's record folder."""
        return {b for b in block_ids if os.path.exists(os.path.join(self.directory, str(b)))}

    def forget(self, block_ids: list[int]) -> None:
        """Drop the records of `block_ids` (they are about to be rewritten)."""
        for block_id in block_ids:
            try:
                os.remove(os.path.join(self.directory, str(block_id)))
            except FileNotFoundError:
                pass

    def executors(self) -> dict[int, str]:
        """Which executor wrote each recorded block."""
        result = {}
        for block_id in self.done():
            with open(os.path.join(self.directory, str(block_id))) as stream:
                result[block_id] = json.load(stream)["executor"]
        return result


def new_token() -> str:
    return uuid.uuid4().hex
