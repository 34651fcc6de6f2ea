"""One error hierarchy, so callers can tell a bad argument from a storage fault or failed blocks.

Every error bioimage-tasks raises on purpose derives from `BioimageTasksError`, and also from
the built-in error it refines, so code that catches `ValueError`, `OSError` or `RuntimeError`
still does:

- `BioimageTasksError`
    - `ParameterError` (`ValueError`): a parameter cannot be used; before anything is written.
    - `StorageError` (`OSError`): a store cannot be reached, or `verify_flow` found bad chunks.
    - `BlocksFailedError` (`RuntimeError`): some blocks failed; the others are written.
    - `NoWorkersError` (`RuntimeError`, backends.py): a Dask backend lost all its workers.
    - `ConvertFailedError` (`RuntimeError`, convert_report.py): `convert_flow`'s files failed.

>>> issubclass(ParameterError, ValueError) and issubclass(ParameterError, BioimageTasksError)
True
"""

from __future__ import annotations


class BioimageTasksError(Exception):
    """Base of every error bioimage-tasks raises on purpose: catch it to catch them all."""


class ParameterError(BioimageTasksError, ValueError):
    """Raised when a parameter, or the data it names, cannot be used.

    Every entry point (`downsample`, `copy`, `pyramid`, `convert`, `verify`, the flows, the
    configs) checks all its parameters before it creates or writes anything, so nothing is
    left half-made; the message names the parameter at fault and what it takes.

    Examples
    --------
    >>> import numpy as np
    >>> import bioimage_tasks as bt
    >>> bt.downsample(np.zeros((4, 4)), 2, method="average")
    Traceback (most recent call last):
    ...
    bioimage_tasks.errors.ParameterError: method must be one of ('resize', 'mean', 'mode', \
'min', 'max', 'median', 'stride'), got 'average'
    """


class StorageError(BioimageTasksError, OSError):
    """Raised when a store cannot be reached, or holds bad data.

    An object-storage endpoint that does not answer when a URL is first opened is refused
    within seconds, before anything is written (tensorstore alone would wait minutes);
    `verify_flow` raises it when chunks are missing or damaged. Read and write errors during a
    run fail their blocks instead (`BlocksFailedError`).
    """


class BlocksFailedError(BioimageTasksError, RuntimeError):
    """Raised when some blocks of a run failed; the others are written and recorded.

    A rerun of the same call resumes: it writes only the blocks not recorded done. Raised by
    `downsample`, `copy` and `pyramid` (and their flows, after each batch's retries) once every
    block has been tried.

    Attributes
    ----------
    failures : dict of int to str
        The first failed blocks' ids and errors (at most a few: a run of 10**7 blocks never
        lists them all).
    failed_block_ids : list of int
        The ids in `failures`, sorted: pass them as `block_ids` to re-run exactly those.
    n_failed : int
        How many blocks failed.
    total : int
        How many blocks the run (or stage) had.
    rerun : str or None
        How to re-run them (None: the same call resumes).
    counts : engine.Counts or None
        What the run's other blocks did (written, skipped, ...).
    report : BatchReport or None
        The failed batch's report, when one batch raised it.
    """

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
