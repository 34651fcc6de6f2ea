"""One input file of a `convert` run: its record, whether to skip, resume, redo or convert it, and
the conversion itself, which catches the file's error as its outcome (convert.py)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bioimage_tasks.convert_report import FileOutcome

RECORDS = os.path.join(".bioimage-tasks", "convert")


def stat_signature(path: str) -> dict[str, int]:
    status = os.stat(path)
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def folder_bytes(path: str) -> int:
    """Bytes of every file under `path` (0 when it does not exist), from the folders' entries
    (one stat per file, none per folder: a small pyramid has as many folders as files)."""
    total, folders = 0, [path]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


def read_record(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def write_record(path: str, record: dict[str, Any]) -> None:
    """Write the record atomically (a kill leaves the old one or the new one)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(record, file, indent=1)
    os.replace(temporary, path)


def next_step(record: dict[str, Any] | None, signature: dict, key: str, output: str) -> str:
    """'skip' (converted, same input and parameters), 'resume' (cut off, same input and
    parameters), 'redo' (input or parameters changed: start over), or 'convert' (new)."""
    if record is None:
        return "resume" if os.path.exists(output) else "convert"
    same = record.get("signature") == signature and record.get("parameters") == key
    if not same:
        return "redo" if os.path.exists(output) else "convert"
    written = any(os.path.exists(os.path.join(output, f)) for f in ("zarr.json", ".zattrs"))
    if record.get("outcome") in ("converted", "resumed", "redone") and written:
        return "skip"
    return "resume" if os.path.exists(output) else "convert"


@dataclass(frozen=True)
class FileJob:
    """What every file of a run shares: where outputs go, the parameters' digest (`key`), the
    pyramid call and its parameters."""

    output_dir: str
    key: str
    run_pyramid: Callable[..., Any]
    keep_axes: str
    pyramid_kwargs: dict[str, Any]

    def outcome(self, name: str, path: str, dry_run: bool) -> FileOutcome:
        """Skip, convert, resume or redo one file (or say which, with `dry_run`)."""
        output, record_path, signature, record, step = self.step(name, path)
        if dry_run:
            return dry_run_outcome(name, path, output, step, record, self.keep_axes)
        if step == "skip":
            return FileOutcome(name, path, output, "skipped", record.get("bytes", 0))
        return convert_one(self, name, path, output, step, record_path, signature)

    def output(self, name: str) -> str:
        """Where the image of the input named `name` goes."""
        return os.path.join(self.output_dir, f"{name}.ome.zarr")

    def step(self, name: str, path: str) -> tuple[str, str, dict, dict | None, str]:
        """(output, record path, the input's signature, its record, next_step) of one file."""
        output = self.output(name)
        record_path = os.path.join(self.output_dir, RECORDS, f"{name}.json")
        signature = stat_signature(path)
        record = read_record(record_path)
        step = next_step(record, signature, self.key, output)
        return output, record_path, signature, record, step


def pyramid_input(path: str, keep_axes: str) -> Any:
    """The path itself, or a microscopy source keeping `keep_axes` where they are singletons."""
    if not keep_axes:
        return path
    from bioimage_tasks.io import open_microscopy

    return open_microscopy(path, "input", keep=keep_axes)


def failure_reason(error: BaseException) -> str:
    """A failed file's reason: the error's type and the first line of its message."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}"


def convert_one(
    job: FileJob, name: str, path: str, output: str, step: str, record_path: str, signature: dict
) -> FileOutcome:
    """Write one pyramid (its record first says "running"), catching its error as the outcome."""
    outcome = {"convert": "converted", "resume": "resumed", "redo": "redone"}[step]
    if step == "redo":
        shutil.rmtree(output, ignore_errors=True)
    record = {"input": os.path.abspath(path), "signature": signature, "parameters": job.key}
    write_record(record_path, record | {"outcome": "running"})
    started, reason = time.perf_counter(), ""
    try:
        job.run_pyramid(pyramid_input(path, job.keep_axes), output, **job.pyramid_kwargs)
    except Exception as error:  # noqa: BLE001 - a bad file is reported; the others still run
        outcome, reason = "failed", failure_reason(error)
    result = FileOutcome(
        name, path, output, outcome, folder_bytes(output), time.perf_counter() - started, reason
    )
    write_record(
        record_path,
        {**record, **{k: v for k, v in asdict(result).items() if k not in ("name", "input")}},
    )
    return result


def dry_run_outcome(
    name: str, path: str, output: str, step: str, record: dict | None, keep_axes: str
) -> FileOutcome:
    """What a run would do with one file, with the input's shape and dtype (or why it cannot
    be read)."""
    if step == "skip":
        return FileOutcome(name, path, output, "would skip", (record or {}).get("bytes", 0))
    from bioimage_tasks.io import as_source

    try:
        source = as_source(pyramid_input(path, keep_axes))
    except Exception as error:  # noqa: BLE001 - reported like a failed file
        return FileOutcome(name, path, output, "failed", reason=f"{type(error).__name__}: {error}")
    detail = f"{tuple(source.shape)} {source.dtype}"
    return FileOutcome(name, path, f"{output} ({detail})", f"would {step}")
