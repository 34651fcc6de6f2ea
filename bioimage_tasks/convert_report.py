"""What `convert` reports: each file's outcome, the table the command line prints and the
markdown summary `convert_flow` publishes, and the error a flow run fails with when a file
failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from bioimage_tasks.errors import BioimageTasksError


@dataclass
class FileOutcome:
    """What happened to one input file.

    Attributes
    ----------
    name : str
        The output's name: the file's name without its extension.
    input : str
        The input file.
    output : str
        The OME-Zarr image written (with `dry_run`: also the input's shape and dtype).
    outcome : str
        "converted", "resumed", "redone", "skipped" or "failed"; with `dry_run`,
        "would convert", "would resume", "would redo", "would skip" (or "failed": unreadable).
    bytes : int
        Size of the output on disk.
    seconds : float
        Time the file took.
    reason : str
        Why it failed ("" when it did not).
    """

    name: str
    input: str
    output: str
    outcome: str
    bytes: int = 0
    seconds: float = 0.0
    reason: str = ""


@dataclass
class ConvertReport:
    """What `convert` did: every file's outcome, in the order of their names.

    Attributes
    ----------
    output_dir : str
        The folder written to.
    files : list of FileOutcome
        One outcome per input file.
    """

    output_dir: str
    files: list[FileOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[FileOutcome]:
        """The files that failed."""
        return [f for f in self.files if f.outcome == "failed"]

    @property
    def ok(self) -> bool:
        """Whether every file was converted (or skipped as converted already)."""
        return not self.failed

    def table(self) -> str:
        """One line per file: name, outcome, size, time, and the output or the reason."""
        lines = [f"{'file':30} {'outcome':14} {'size':>10} {'time':>8}  output / reason"]
        for f in self.files:
            where = f.reason if f.outcome == "failed" else f.output
            lines.append(
                f"{f.name:30} {f.outcome:14} {human_bytes(f.bytes):>10} {f.seconds:7.1f}s  {where}"
            )
        done = len(self.files) - len(self.failed)
        lines.append(f"{done} of {len(self.files)} files ok, {len(self.failed)} failed")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as markdown (convert_flow's summary artifact)."""
        rows = [
            f"| {f.name} | {f.outcome} | {human_bytes(f.bytes)} | {f.seconds:.1f} s | "
            f"{(f.reason if f.outcome == 'failed' else f.output).replace('|', '/')} |"
            for f in self.files
        ]
        head = ["| file | outcome | size | time | output / reason |", "|---|---|---|---|---|"]
        return "\n".join([f"# convert -> {self.output_dir}", "", *head, *rows])


class ConvertFailedError(BioimageTasksError, RuntimeError):
    """Raised by `convert_flow` when some files failed, after the others ran (the plain `convert`
    returns its report instead); `report` lists every file's outcome."""

    def __init__(self, report: ConvertReport):
        names = ", ".join(f"{f.name} ({f.reason})" for f in report.failed)
        super().__init__(f"{len(report.failed)} of {len(report.files)} files failed: {names}")
        self.report = report


def human_bytes(size: int) -> str:
    """'1.5 MB' style sizes (powers of 1024)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
