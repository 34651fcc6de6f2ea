"""What a person watching a flow run sees: a Prefect progress artifact that moves while blocks
finish, INFO log lines every 10 %, a markdown summary artifact at the end, and the in-process
progress listener (the command line's progress bar)."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from bioimage_tasks.plain import progress_listener

MIN_UPDATE_INTERVAL = 2.0  # seconds between progress artifact updates (each costs ~10-40 ms)


class Progress:
    """Blocks done out of the planned total for one run, reported at a bounded rate. The progress
    artifact is created once the run has lasted MIN_UPDATE_INTERVAL (a shorter run has only its
    summary: a bar that appears at 100 % shows nothing, and costs two API calls)."""

    def __init__(self, total: int, already_done: int, label: str):
        self.total, self.done, self.label = total, already_done, label
        self.logged_tenths = already_done * 10 // max(total, 1)
        self.last_update = time.monotonic()
        self.artifact: Any = None
        self.listener = progress_listener.get()
        self._notify()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def advance(self, blocks: int) -> None:
        """`blocks` more blocks are done (written, skipped by mask, or found done); 0 still
        publishes the artifact when it is due."""
        self.done += blocks
        tenths = self.done * 10 // max(self.total, 1)
        if tenths > self.logged_tenths:
            self.logged_tenths = tenths
            get_run_logger().info(
                "%s: %d of %d blocks done (%d %%)",
                self.label,
                self.done,
                self.total,
                100 * self.fraction,
            )
        self.tick()
        self._notify()

    def tick(self) -> None:
        """Publish the progress artifact if MIN_UPDATE_INTERVAL has passed since the last time (or
        since the start), and its final value if it exists when the run is complete."""
        due = time.monotonic() - self.last_update >= MIN_UPDATE_INTERVAL
        if self.artifact is None and due:
            self.artifact = create_progress_artifact(
                100.0 * self.fraction, description=f"{self.label}: blocks done"
            )
        elif self.artifact is not None and (due or self.done >= self.total):
            update_progress_artifact(self.artifact, 100.0 * self.fraction)
        else:
            return
        self.last_update = time.monotonic()

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self.done, self.total)


def publish_summary(markdown: str, key: str) -> None:
    create_markdown_artifact(markdown, key=key, description="bioimage-tasks run summary")
