"""One error hierarchy, so callers can tell a bad argument from a storage fault or failed blocks.

Every error we raise on purpose derives from `BioimageTasksError`. `ParameterError` is also a
`ValueError` and `StorageError` an `OSError`, so code that caught those before still does.

>>> issubclass(ParameterError, ValueError) and issubclass(ParameterError, BioimageTasksError)
True
"""

from __future__ import annotations


class BioimageTasksError(Exception):
    """Base of every error bioimage-tasks raises on purpose."""


class ParameterError(BioimageTasksError, ValueError):
    """A parameter (or the input it names) cannot be used; raised before anything is written,
    and the message names the parameter."""


class StorageError(BioimageTasksError, OSError):
    """A store could not be reached or read/written (an endpoint that does not answer, ...)."""


class BlocksFailedError(BioimageTasksError, RuntimeError):
    """Some blocks failed; the others are written. Names the first failed blocks with their
    errors (`failures`, at most a few: a run of 10**7 blocks never lists them all), how many
    failed (`n_failed`), and how to re-run them (`rerun`; by default the same call resumes).
    `counts` (engine.Counts) and `report` (a batch's BatchReport) say what the others did."""

    def __init__(
        self,
        failed: dict[int, str],
        total: int,
        rerun: str | None = None,
        *,
        n_failed: int | None = None,
        counts: object = None,
        report: object = None,
    ):
        self.failures = dict(failed)
        self.total = total
        self.rerun = rerun
        self.n_failed = len(failed) if n_failed is None else n_failed
        self.counts, self.report = counts, report
        self.failed_block_ids = sorted(failed)
        first = self.failed_block_ids[0] if self.failed_block_ids else None
        listed = (
            self.failed_block_ids
            if self.n_failed == len(failed)
            else (f"{self.failed_block_ids} and {self.n_failed - len(failed)} more")
        )
        how = rerun or (
            "Re-run the same call to resume (finished blocks are skipped), or re-run exactly these "
            f"blocks with the same call plus block_ids={self.failed_block_ids}"
        )
        first_error = f" First error (block {first}): {failed[first]}" if first is not None else ""
        super().__init__(
            f"{self.n_failed} of {total} blocks failed: {listed}. The other blocks are "
            f"written. {how}.{first_error}"
        )

    def in_stage(self, stage: str) -> BlocksFailedError:
        """This error, said of the stage `stage` of a run of several (its block ids are its own)."""
        rerun = (
            f"Failed in the {stage} stage (block ids are its own); re-run the same call to "
            "resume: finished blocks are skipped"
        )
        return BlocksFailedError(
            self.failures, self.total, rerun, n_failed=self.n_failed, counts=self.counts
        )

    def __reduce__(self):
        return _rebuild_blocks_failed, (
            self.failures,
            self.total,
            self.rerun,
            self.n_failed,
            self.counts,
            self.report,
        )


def _rebuild_blocks_failed(failures, total, rerun, n_failed, counts, report) -> BlocksFailedError:
    return BlocksFailedError(
        failures, total, rerun, n_failed=n_failed, counts=counts, report=report
    )
