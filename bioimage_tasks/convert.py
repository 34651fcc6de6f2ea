"""A folder of images converted in one run: every file a pattern matches becomes
`<output_dir>/<name>.ome.zarr`, an OME-Zarr pyramid as `bioimage_tasks.pyramid` writes it.

The plain `convert` starts the backend (`job_type`, `num_workers`) once for the whole run and
runs up to `num_workers` files at once on it: every pyramid's batches go to the same workers, so
a large file keeps them all busy instead of one file per worker-pool start. On threads
(`job_type="local"`), files of at most 64 MiB go first to `num_workers` worker processes, one
file at a time each (convert_processes.py): their per-file Python would otherwise queue for one
GIL. The memory budget stays per worker (a worker runs one batch at a time). `convert_flow` runs
files one after another, a child flow run each.
Resumable: each output has a small record, `<output_dir>/.bioimage-tasks/convert/<name>.json`
(the input's size and mtime, the parameters, the outcome). A rerun skips a file whose record
says converted with the same input and parameters (reading only the record and the group's
zarr.json), resumes one that was cut off (the pyramid's own block records), and redoes, from
scratch, one whose input or parameters changed. A file that fails is reported with its reason;
the others still run."""

from __future__ import annotations

import glob
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from bioimage_tasks.convert_job import RECORDS, FileJob
from bioimage_tasks.convert_processes import convert_in_processes, small_inputs
from bioimage_tasks.convert_report import ConvertFailedError, ConvertReport, FileOutcome
from bioimage_tasks.errors import ParameterError

__all__ = ["ConvertFailedError", "ConvertReport", "FileOutcome", "convert", "convert_files"]
NOT_PASSED = ("input", "output_group")  # convert chooses these per file
logger = logging.getLogger("bioimage_tasks.convert")


def input_files(pattern: str) -> list[str]:
    """The files `pattern` names: a glob ('in/*.czi'), a folder (its files), or one file."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not files:
        raise ParameterError(f"pattern {pattern!r} matches no file")
    return files


def output_name(path: str) -> str:
    """'a.czi' -> 'a', 'b.ome.tif' -> 'b'."""
    name = os.path.basename(path)
    stem, _ = os.path.splitext(name)
    return stem.removesuffix(".ome") or name


def named_inputs(files: list[str]) -> dict[str, str]:
    """{output name: input file}; a ParameterError when two inputs would share an output."""
    named: dict[str, str] = {}
    for path in files:
        name = output_name(path)
        if name in named:
            raise ParameterError(
                f"pattern: {named[name]!r} and {path!r} would both write {name}.ome.zarr; "
                "convert them into different output_dir"
            )
        named[name] = path
    return named


def check_parameters(output_dir: str, pyramid_kwargs: dict[str, Any], keep_axes: str) -> None:
    """Every parameter that is the same for all files, checked before anything is written."""
    from bioimage_tasks.api import pyramid_operation
    from bioimage_tasks.api_checks import check_method_options
    from bioimage_tasks.io import check_output_options
    from bioimage_tasks.runners import check_backend

    if "://" in str(output_dir):
        raise ParameterError(f"output_dir must be a local folder, got {output_dir!r}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ParameterError(f"output_dir {output_dir!r} exists and is not a folder")
    accepted = set(inspect.signature(pyramid_operation).parameters) - set(NOT_PASSED)
    unknown = sorted(set(pyramid_kwargs) - accepted)
    if unknown:
        raise ParameterError(
            f"convert takes pyramid's parameters {sorted(accepted)}; not {unknown}"
        )
    if (pyramid_kwargs.get("levels") is None) == (pyramid_kwargs.get("scale_factors") is None):
        raise ParameterError(
            "give exactly one of levels (planned from voxel_size) and scale_factors (per level)"
        )
    check_method_options(
        pyramid_kwargs.get("method", "mean"),
        pyramid_kwargs.get("order", 0),
        pyramid_kwargs.get("anti_aliasing", False),
    )
    check_backend(
        pyramid_kwargs.get("job_type", "local"),
        pyramid_kwargs.get("num_workers", 1),
        pyramid_kwargs.get("job_config"),
    )
    check_output_options(pyramid_kwargs.get("output_options"))
    if not set(keep_axes) <= set("tczyx"):
        raise ParameterError(f"keep_axes must name axes among 'tczyx', got {keep_axes!r}")


def checked_inputs(
    pattern: str, output_dir: str, pyramid_kwargs: dict[str, Any], keep_axes: str
) -> dict[str, str]:
    """{output name: input file} of `pattern`, every parameter common to all files checked first;
    raised before anything is written or started."""
    check_parameters(output_dir, pyramid_kwargs, keep_axes)
    return named_inputs(input_files(pattern))


def parameters_key(pyramid_kwargs: dict[str, Any], keep_axes: str) -> str:
    """A digest of what shapes the outputs (backend choices aside)."""
    backend = {"job_type", "job_config", "num_workers"}
    shaping = {k: v for k, v in sorted(pyramid_kwargs.items()) if k not in backend}
    text = json.dumps({**shaping, "keep_axes": keep_axes}, sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def convert_files(
    pattern: str,
    output_dir: str,
    run_pyramid: Callable[..., Any],
    *,
    dry_run: bool = False,
    keep_axes: str = "",
    log: Callable[..., None] = logger.info,
    files_at_once: int = 1,
    processes: int = 0,
    inputs: dict[str, str] | None = None,
    **pyramid_kwargs: Any,
) -> ConvertReport:
    """Convert every file `pattern` matches with `run_pyramid(input, output_group, **kwargs)`
    (the plain pyramid on a shared backend, or pyramid_flow for child flow runs), up to
    `files_at_once` at a time; with `processes` > 1, small files in that many worker processes
    first (convert_processes.py). See the module. `inputs`: what `checked_inputs` returned for
    these arguments already (the pattern is then not matched again)."""
    if inputs is None:
        inputs = checked_inputs(pattern, output_dir, pyramid_kwargs, keep_axes)
    if not dry_run:
        os.makedirs(os.path.join(output_dir, RECORDS), exist_ok=True)
    key = parameters_key(pyramid_kwargs, keep_axes)
    job = FileJob(output_dir, key, run_pyramid, keep_axes, pyramid_kwargs)

    def logged(done: FileOutcome) -> FileOutcome:
        log("convert %s: %s %s", done.name, done.outcome, done.reason or done.output)
        return done

    small = {} if dry_run else pooled_inputs(job, inputs, processes)
    outcomes = {
        f.name: f
        for f in convert_in_processes(job, small.items(), processes, logged)
        + run_files(
            lambda name, path: logged(job.outcome(name, path, dry_run)),
            [(name, path) for name, path in inputs.items() if name not in small],
            1 if dry_run else files_at_once,
        )
    }
    return ConvertReport(str(output_dir), [outcomes[name] for name in inputs])


def pooled_inputs(job: FileJob, inputs: dict[str, str], processes: int) -> dict[str, str]:
    """The files `processes` worker processes convert: small ones that are not finished (a rerun
    of a converted folder starts no process)."""
    if processes < 2:
        return {}
    unfinished = {n: p for n, p in inputs.items() if job.step(n, p)[-1] != "skip"}
    return small_inputs(unfinished, processes)


def run_files(
    one: Callable[[str, str], FileOutcome], items: Iterable[tuple[str, str]], at_once: int
) -> list[FileOutcome]:
    """`one(name, path)` for every item, `at_once` at a time; outcomes in the order they end.
    Interrupted, files not started are dropped and the caller's backend stops the running ones."""
    if at_once <= 1:
        return [one(name, path) for name, path in items]
    pool = ThreadPoolExecutor(at_once, "bioimage-tasks-convert")
    try:
        futures = [pool.submit(one, name, path) for name, path in items]
        outcomes = [future.result() for future in as_completed(futures)]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outcomes


def convert(
    pattern: str,
    output_dir: str,
    *,
    dry_run: bool = False,
    keep_axes: str = "",
    **pyramid_kwargs: Any,
) -> ConvertReport:
    """Convert every file `pattern` matches into an OME-Zarr image in `output_dir`.

    A folder of microscopy files (CZI, ND2, LIF, OME-TIFF, TIFF stacks, HDF5, ...) becomes a
    folder of OME-Zarr images in one call: each file is written by `bioimage_tasks.pyramid`
    with `pyramid_kwargs`, on one backend started for the whole run: up to `num_workers` files
    at once, their batches sharing the workers (a large file on all of them). On threads, files
    of at most 64 MiB run in `num_workers` worker processes instead, one file at a time each.
    Resumable: a rerun skips the files converted with the same input (size, mtime) and
    parameters, resumes one cut off, and starts over one whose input or parameters changed
    (records in `<output_dir>/.bioimage-tasks/convert/`). A file that fails is reported with
    its reason; the others still run.

    Parameters
    ----------
    pattern : str
        The input files: a glob (`"in/*.czi"`), a folder (all its files), or one file. Two
        files may not share a name up to their extension (`a.czi`, `a.tif`): both would write
        `a.ome.zarr`.
    output_dir : str
        A local folder, created if missing; each file `<name>.<ext>` becomes
        `<output_dir>/<name>.ome.zarr` (`b.ome.tif` becomes `b.ome.zarr`).
    dry_run : bool, default False
        Only say what a run would do with each file ("would convert", "would resume",
        "would redo", "would skip"), with its shape and dtype; nothing is written.
    keep_axes : str, default ""
        Axes among `"tczyx"` that microscopy files keep even where they have length 1 (e.g.
        `"c"`, so every image has a channel axis); others of length 1 are dropped.
    **pyramid_kwargs
        Parameters of `bioimage_tasks.pyramid` (all but `input` and `output_group`), the same
        for every file: give `levels` or `scale_factors`, and any of `method`, `voxel_size`,
        `chunks`, `shards`, `ngff_version`, `job_type`, `job_config`, `num_workers`,
        `output_options`, ...

    Returns
    -------
    ConvertReport
        Every file's outcome, in the order of their names: `report.files` (name, input, output,
        outcome, bytes, seconds, reason), `report.ok` (False when a file failed),
        `report.table()` and `report.markdown()`.

    Raises
    ------
    ParameterError
        A parameter common to all files cannot be used (an unknown pyramid parameter, neither
        or both of `levels` and `scale_factors`, a bad method, backend or `keep_axes`, a
        pattern that matches no file, two files with one output name), or `output_dir` is not
        a local folder; raised before anything is written. A parameter that does not fit one
        file (its axes, dtype, ...) fails that file only.

    See Also
    --------
    convert_flow : the same run as a Prefect flow, each file's pyramid a child flow run.
    pyramid : the pyramid of one input, which each file gets.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import tifffile
    >>> import bioimage_tasks as bt
    >>> folder = tempfile.TemporaryDirectory()
    >>> for name in ("a", "b"):
    ...     tifffile.imwrite(f"{folder.name}/{name}.tif", np.zeros((16, 16), np.uint8))
    >>> report = bt.convert(f"{folder.name}/*.tif", f"{folder.name}/out", levels=1)
    >>> [(file.name, file.outcome) for file in report.files]
    [('a', 'converted'), ('b', 'converted')]
    >>> report = bt.convert(f"{folder.name}/*.tif", f"{folder.name}/out", levels=1)
    >>> [(file.name, file.outcome) for file in report.files], report.ok
    ([('a', 'skipped'), ('b', 'skipped')], True)
    >>> folder.cleanup()
    """
    from bioimage_tasks.api import pyramid

    named = checked_inputs(pattern, output_dir, pyramid_kwargs, keep_axes)  # before any worker
    options = {"keep_axes": keep_axes, "inputs": named, **pyramid_kwargs}
    if dry_run:
        return convert_files(pattern, output_dir, pyramid, dry_run=True, **options)
    from bioimage_tasks.backends import backend
    from bioimage_tasks.runners import check_backend

    job_type = pyramid_kwargs.get("job_type", "local")
    num_workers = pyramid_kwargs.get("num_workers", 1)
    config = check_backend(job_type, num_workers, pyramid_kwargs.get("job_config"))
    with backend(job_type, num_workers, config) as executor:
        run_pyramid = pyramid_on(executor)
        processes = num_workers if job_type == "local" else 0
        return convert_files(
            pattern,
            output_dir,
            run_pyramid,
            files_at_once=num_workers,
            processes=processes,
            **options,
        )


def pyramid_on(executor: Any) -> Callable[..., Any]:
    """`bioimage_tasks.pyramid` running its batches on `executor`, a backend already started
    (its workers shared by every file of the run) instead of starting one per call."""
    from bioimage_tasks.api import built, pyramid_operation
    from bioimage_tasks.operations import execute
    from bioimage_tasks.plain import PlainEdge

    def run(input: Any, output_group: str, **kwargs: Any) -> Any:
        operation = built(pyramid_operation, (input, output_group), kwargs)
        return execute(operation, PlainEdge(executor, operation.config.worker_timeout))

    return run
