"""Leases and ownership of outputs, for any flow and any number of output folders.

A lease says "a live run of computation K is writing here". It lives in
`<output dir>/.bioimage-tasks/lease.json`: the computation and its holders (flow run id, host,
pid, start time, last renewal, time to live). A different computation is refused before it
writes (`LeaseHeldError`, naming a holder); the same computation joins (a rerun, a second
process). The holder renews it every `ttl / 4` seconds from a thread; it expires `ttl` seconds
after the last renewal, or at once when its process is gone from this host, so a SIGKILLed flow
never locks an output for long. Changes to the file are made under a POSIX lock (`lease.lock`,
which NFS and Lustre support) and written atomically (temporary file, then rename).

Ownership says "the blocks recorded here belong to computation K": `<output dir>/.bioimage-tasks/
owner.json` holds the owning computation and an epoch. Claiming an output for another computation
starts a new epoch, which run keys include, so every record and cached batch of the previous owner
stops counting at once (A, B, A recomputes; A, A resumes); their folders are then removed."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from bioimage_tasks.records import RECORDS_DIR

LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: the Prefect flow run (None outside a flow), host, process, start time."""

    flow_run_id: str | None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds"))

    @classmethod
    def current(cls) -> Holder:
        """This process, in the flow run it is running (if any)."""
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        run = getattr(context, "flow_run", None)
        return cls(str(run.id) if run is not None else None)

    def describe(self) -> str:
        return f"flow run {self.flow_run_id or '(none)'} on host {self.host} (pid {self.pid}), started {self.started}"


class LeaseHeldError(RuntimeError):
    """The output is being written by a live run of another computation."""


def _folder(directory: str) -> str:
    folder = os.path.join(directory, RECORDS_DIR)
    os.makedirs(folder, exist_ok=True)
    return folder


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[str]:
    """Hold the POSIX lock of an output's lease file; yields the lease file's path."""
    folder = _folder(directory)
    with open(os.path.join(folder, "lease.lock"), "a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        try:
            yield os.path.join(folder, "lease.json")
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)


def _read(path: str) -> dict:
    try:
        with open(path) as stream:
            return json.load(stream)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_atomically(path: str, value: dict) -> None:
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(handle, "w") as stream:
        json.dump(value, stream)
    os.replace(temporary, path)


def _alive(entry: dict, now: float) -> bool:
    """A holder is live until `ttl` after its last renewal, unless its process is gone here."""
    if now > entry["renewed"] + entry["ttl"]:
        return False
    if entry["host"] == socket.gethostname():
        try:
            os.kill(entry["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def holders(directory: str) -> tuple[str | None, list[Holder]]:
    """The computation holding an output's lease and its live holders ((None, []) when free)."""
    lease = _read(os.path.join(directory, RECORDS_DIR, "lease.json"))
    now = time.time()
    live = [Holder(e["flow_run_id"], e["host"], e["pid"], e["started"]) for e in lease.get("holders", {}).values() if _alive(e, now)]
    return (lease.get("computation") if live else None), live


def _acquire(directory: str, computation: str, holder: Holder, holder_id: str, ttl: float) -> None:
    with _locked(directory) as path:
        lease = _read(path)
        now = time.time()
        live = {k: e for k, e in lease.get("holders", {}).items() if _alive(e, now)}
        if live and lease.get("computation") != computation:
            entry = next(iter(live.values()))
            other = Holder(**{k: v for k, v in entry.items() if k in Holder.__dataclass_fields__})
            raise LeaseHeldError(
                f"output {directory} is being written by another computation: {other.describe()}. "
                f"Wait for that run to end (or cancel it); its lease expires {entry['ttl']:.0f} s after its last "
                "renewal if it dies"
            )
        live[holder_id] = asdict(holder) | {"renewed": now, "ttl": ttl}
        _write_atomically(path, {"computation": computation, "holders": live})


def _renew(directory: str, holder_id: str) -> None:
    with _locked(directory) as path:
        lease = _read(path)
        if holder_id in lease.get("holders", {}):
            lease["holders"][holder_id]["renewed"] = time.time()
            _write_atomically(path, lease)


def _release(directory: str, holder_id: str) -> None:
    with _locked(directory) as path:
        lease = _read(path)
        if lease.get("holders", {}).pop(holder_id, None) is not None:
            _write_atomically(path, lease)


@contextlib.contextmanager
def output_lease(directories: Sequence[str], computation: str, holder: Holder | None = None,
                 ttl: float = LEASE_SECONDS) -> Iterator[Holder]:
    """Hold the lease of every output folder in `directories` for `computation` while the block
    runs, renewing it from a thread; raise LeaseHeldError (before anything is written) if a live
    run of another computation holds one of them. Yields the holder."""
    holder = holder or Holder.current()
    holder_id = f"{holder.host}:{holder.pid}:{uuid.uuid4().hex[:8]}"
    directories = sorted({os.path.abspath(d) for d in directories})
    taken: list[str] = []
    try:
        for directory in directories:
            _acquire(directory, computation, holder, holder_id, ttl)
            taken.append(directory)
    except BaseException:
        for directory in taken:
            _release(directory, holder_id)
        raise
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 4):
            for directory in directories:
                with contextlib.suppress(OSError):  # a missed renewal is retried; the ttl allows 3
                    _renew(directory, holder_id)

    renewer = threading.Thread(target=renew, name="bioimage-tasks-lease", daemon=True)
    renewer.start()
    try:
        yield holder
    finally:
        stop.set()
        renewer.join()
        for directory in directories:
            with contextlib.suppress(OSError):  # e.g. the output was deleted meanwhile
                _release(directory, holder_id)


def owned_epoch(directories: Sequence[str], computation: str) -> str | None:
    """The epoch `claim_ownership` would return without a change, if `computation` owns every
    folder already; None otherwise."""
    epochs = []
    for directory in sorted(os.path.abspath(d) for d in directories):
        owner = _read(os.path.join(directory, RECORDS_DIR, "owner.json"))
        if owner.get("computation") != computation or "epoch" not in owner:
            return None
        epochs.append(owner["epoch"])
    return "-".join(epochs)


def claim_ownership(directories: Sequence[str], computation: str) -> str:
    """Make `computation` the owner of the blocks recorded in each output folder (hold its lease
    first); return the combined epoch to put into run keys. An output owned by another
    computation (or by none yet) gets a new epoch, and its old record folders are removed."""
    epochs = []
    for directory in sorted(os.path.abspath(d) for d in directories):
        with _locked(directory) as lease_path:  # two joining runs must not each start an epoch
            path = os.path.join(os.path.dirname(lease_path), "owner.json")
            owner = _read(path)
            if owner.get("computation") != computation or "epoch" not in owner:
                owner = {"computation": computation, "epoch": uuid.uuid4().hex}
                _write_atomically(path, owner)  # first: from here on, old records are not trusted
                shutil.rmtree(os.path.join(directory, RECORDS_DIR, "blocks"), ignore_errors=True)
        epochs.append(owner["epoch"])
    return "-".join(epochs)
