"""Leases and ownership of outputs, for any flow and any number of outputs, on local disk and
on object storage alike (through `io.kv.Location`, which needs no lock and no conditional write).

A lease says "a live run of computation K is writing here". Each holder (flow run id, host, pid,
start time, last renewal, time to live, computation) has its own small file
`<output>/.bioimage-tasks/lease/<holder>.json`: it writes it, then reads everyone else's. A live
holder of a different computation means refusal (`LeaseHeldError`, naming it, before anything is
written), and the newcomer removes its own file; the same computation joins (a rerun, a second
process). Two different computations starting at the same instant may both be refused, never both
admitted: each wrote before it looked. The holder renews its file every `ttl / 4` seconds from a
thread; it expires `ttl` seconds after the last renewal, or at once when its process is gone from
this host, so a SIGKILLed flow never locks an output for long. One thread per process renews every
lease the process holds.

A lease or owner file on a folder covers the outputs inside it: a pyramid writes its files on its
group only, not on each level (a folder of small images converted in one run pays every file
created, issue 23). So a newcomer also reads the leases of the folder just above each output it
writes (a level's group), and a covering holder reads those of the outputs inside its folder: a
writer of one level and a writer of its pyramid still refuse each other.

Ownership says "the blocks recorded here belong to computation K": `<output>/.bioimage-tasks/
owner.json` holds the owning computation and an epoch. Claiming an output for another computation
starts a new epoch, which run keys include, so every record and cached batch of the previous owner
stops counting at once (A, B, A recomputes; A, A resumes); their records are then removed. The new
epoch is a hash of the computation and the previous epoch, so two joining processes that claim at
once write the same owner file (no lock needed). An output inside another one being claimed (a
level inside its group) keeps no owner file of its own while the covering one's computation owns it;
one that has an owner file of another computation (it was written alone since) gets one of the
claiming computation, with a new epoch."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from bioimage_tasks.io.kv import KvLocation, LocalLocation, Location, as_location
from bioimage_tasks.records import RECORDS_DIR

LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: the Prefect flow run (None outside a flow), host, process, start time."""

    flow_run_id: str | None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: str = field(
        default_factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    )

    @classmethod
    def current(cls) -> Holder:
        """This process, in the flow run it is running (if any)."""
        prefect_context = sys.modules.get("prefect.context")  # no Prefect loaded: no flow run
        context = None if prefect_context is None else prefect_context.FlowRunContext.get()
        run = getattr(context, "flow_run", None)
        return cls(str(run.id) if run is not None else None)

    def describe(self) -> str:
        return (
            f"flow run {self.flow_run_id or '(none)'} on host {self.host} (pid {self.pid}), "
            f"started {self.started}"
        )


class LeaseHeldError(RuntimeError):
    """The output is being written by a live run of another computation."""


Place = str | os.PathLike | Location  # an output's folder: a local path or a Location


def _records_location(place: Place) -> Location:
    return as_location(place).child(RECORDS_DIR)


def _entries(folder: Location) -> dict[str, dict]:
    """Every lease file of an output: holder id -> its entry."""
    names = [n for n in folder.names() if n.endswith(".json") and not n.startswith(".")]
    contents = folder.read_many(names)
    entries = {}
    for name, data in zip(names, contents):
        with contextlib.suppress(ValueError, TypeError):  # a file deleted meanwhile
            entries[name[: -len(".json")]] = json.loads(data)
    return entries


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


def holders(directory: Place) -> tuple[str | None, list[Holder]]:
    """The computation holding an output's lease and its live holders ((None, []) when free)."""
    now = time.time()
    live = [
        e for e in _entries(_records_location(directory).child("lease")).values() if _alive(e, now)
    ]
    return (live[0]["computation"] if live else None), [_holder(e) for e in live]


def _holder(entry: dict) -> Holder:
    return Holder(**{k: v for k, v in entry.items() if k in Holder.__dataclass_fields__})


def _acquire(
    directory: Place,
    computation: str,
    holder: Holder,
    holder_id: str,
    ttl: float,
    also_check: Sequence[Location] = (),
) -> None:
    """Write this holder's lease file, then refuse (removing it) if a live holder of another
    computation has one, here or in `also_check` (folders whose leases cover this one, or that
    this one covers)."""
    folder = _records_location(directory).child("lease")
    now = time.time()
    folder.write(
        f"{holder_id}.json",
        json.dumps(
            asdict(holder) | {"computation": computation, "renewed": now, "ttl": ttl}
        ).encode(),
    )
    entries = _entries(folder)
    for other in also_check:
        found = _entries(_records_location(other).child("lease"))
        entries |= {f"{other.url} {k}": e for k, e in found.items()}
    others = [
        e for k, e in entries.items() if k != holder_id and e.get("computation") != computation
    ]
    live = [e for e in others if _alive(e, now)]
    if live:
        folder.delete(f"{holder_id}.json")
        raise LeaseHeldError(
            f"output {as_location(directory).url} is being written by another computation: "
            f"{_holder(live[0]).describe()}. Wait for that run to end (or cancel it); its lease "
            f"expires {live[0]['ttl']:.0f} s after its last renewal if it dies"
        )


def _renew(directory: Place, holder_id: str) -> None:
    folder = _records_location(directory).child("lease")
    data = folder.read(f"{holder_id}.json")
    if data is not None:
        folder.write(
            f"{holder_id}.json", json.dumps(json.loads(data) | {"renewed": time.time()}).encode()
        )


def _release(directory: Place, holder_id: str) -> None:
    _records_location(directory).child("lease").delete(f"{holder_id}.json")


def _distinct(directories: Sequence[Place]) -> list[Location]:
    """Each output once, in one order for every process (by URL)."""
    return sorted(
        {location.url: location for location in map(as_location, directories)}.values(),
        key=lambda location: location.url,
    )


def _inside(location: Location, folder: Location) -> bool:
    """Whether `location` is a folder below `folder`."""
    return location.url.startswith(folder.url.rstrip("/") + "/")


def _covering(directories: Sequence[Place]) -> tuple[list[Location], list[Location]]:
    """The distinct outputs split into those inside no other (they keep the lease and owner
    files) and those inside one of them (covered), each in URL order."""
    locations = _distinct(directories)
    roots = [a for a in locations if not any(_inside(a, b) for b in locations)]
    return roots, [a for a in locations if a not in roots]


def _parent(location: Location) -> Location | None:
    """The folder holding `location` (None for a kind of Location without one)."""
    if isinstance(location, LocalLocation):
        return LocalLocation(os.path.dirname(location.path.rstrip("/")))
    if isinstance(location, KvLocation):
        path, url = location.spec["path"].rstrip("/"), location.url.rstrip("/")
        if "/" not in path:
            return None
        return KvLocation(
            location.spec | {"path": path.rsplit("/", 1)[0] + "/"}, url.rsplit("/", 1)[0]
        )
    return None


class _Renewer:
    """The thread that renews every lease this process holds, each every `ttl / 4` seconds
    (one thread for all: a run of many small outputs starts none per output)."""

    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}
        self.wake = threading.Condition()
        self.pid = -1

    def add(self, held: _Held) -> None:
        with self.wake:
            due = held.renewed + held.ttl / 4
            sooner = all(due < h.renewed + h.ttl / 4 for h in self.held.values())
            self.held[held.holder_id] = held
            if self.pid != os.getpid():  # none started yet in this process
                self.pid = os.getpid()
                threading.Thread(target=self.run, name="bioimage-tasks-lease", daemon=True).start()
            if sooner:  # it sleeps until the first renewal due: woken only for a sooner one
                self.wake.notify()

    def remove(self, held: _Held) -> None:
        with self.wake:
            self.held.pop(held.holder_id, None)
        with held.lock:  # a renewal under way ends first; none starts after
            held.released = True

    def run(self) -> None:
        while True:
            with self.wake:
                now = time.monotonic()
                due = [h for h in self.held.values() if now >= h.renewed + h.ttl / 4]
                if not due:
                    due_times = [h.renewed + h.ttl / 4 for h in self.held.values()]
                    self.wake.wait(min(due_times) - now if due_times else None)
                    continue
            for held in due:
                held.renew()


@dataclass(eq=False)
class _Held:
    """A lease this process holds: its files (one per covering output) and when it last renewed."""

    locations: list[Location]
    holder_id: str
    ttl: float
    renewed: float = field(default_factory=time.monotonic)
    released: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def renew(self) -> None:
        with self.lock:
            if self.released:
                return
            for location in self.locations:
                with contextlib.suppress(
                    OSError, ValueError
                ):  # a missed renewal is retried; the ttl allows 3
                    _renew(location, self.holder_id)
            self.renewed = time.monotonic()


_RENEWER = _Renewer()
os.register_at_fork(after_in_child=_RENEWER.__init__)  # a child holds none of its parent's leases


@contextlib.contextmanager
def output_lease(
    directories: Sequence[Place],
    computation: str,
    holder: Holder | None = None,
    ttl: float = LEASE_SECONDS,
) -> Iterator[Holder]:
    """Hold the lease of every output in `directories` (folders or Locations) for `computation`
    while the block runs, renewing it from a thread; raise LeaseHeldError (before anything is
    written) if a live run of another computation holds one of them. Yields the holder."""
    holder = holder or Holder.current()
    holder_id = f"{holder.host}:{holder.pid}:{uuid.uuid4().hex[:8]}"
    locations, covered = _covering(directories)
    taken: list[Location] = []
    try:
        for location in locations:
            around = [p for p in [_parent(location)] if p is not None]
            inside = [c for c in covered if _inside(c, location)]
            _acquire(location, computation, holder, holder_id, ttl, around + inside)
            taken.append(location)
    except BaseException:
        for location in taken:
            _release(location, holder_id)
        raise
    held = _Held(locations, holder_id, ttl)
    _RENEWER.add(held)
    try:
        yield holder
    finally:
        _RENEWER.remove(held)
        for location in locations:
            with contextlib.suppress(OSError, ValueError):  # e.g. the output was deleted meanwhile
                _release(location, holder_id)


def _owner(location: Location) -> dict:
    with contextlib.suppress(ValueError, TypeError):
        return json.loads(location.child(RECORDS_DIR).read("owner.json"))
    return {}


def _owner_files(
    directories: Sequence[Place],
) -> tuple[list[tuple[Location, dict]], list[Location]]:
    """The outputs whose owner file counts, in URL order, each with that file (read once, `{}`
    for none yet); and the outputs inside another that keep none (owned through it)."""
    roots, covered = _covering(directories)
    counted, unowned = [], []
    for location in sorted(roots + covered, key=lambda place: place.url):
        owner = _owner(location)
        if location in covered and not owner:
            unowned.append(location)
        else:
            counted.append((location, owner))
    return counted, unowned


def owned_epoch(directories: Sequence[Place], computation: str) -> str | None:
    """The epoch `claim_ownership` would return without a change, if `computation` owns every
    output already; None otherwise."""
    epochs = []
    for _, owner in _owner_files(directories)[0]:
        if owner.get("computation") != computation or "epoch" not in owner:
            return None
        epochs.append(owner["epoch"])
    return "-".join(epochs)


def claim_ownership(directories: Sequence[Place], computation: str) -> str:
    """Make `computation` the owner of the blocks recorded in each output (hold its lease first);
    return the combined epoch to put into run keys. An output owned by another computation (or by
    none yet) gets a new epoch, and its old records are removed, with those of the outputs inside
    it that keep no owner file of their own."""
    counted, unowned = _owner_files(directories)
    epochs = []
    for location, owner in counted:
        if owner.get("computation") != computation or "epoch" not in owner:
            seed = f"{computation} after {owner.get('epoch')}".encode()
            owner = {
                "computation": computation,
                "epoch": hashlib.blake2b(seed, digest_size=16).hexdigest(),
            }
            folder = location.child(RECORDS_DIR)
            folder.write(
                "owner.json", json.dumps(owner).encode()
            )  # first: from here on, old records are not trusted
            folder.child("blocks").remove_tree()
            for inner in unowned:
                if _inside(inner, location):
                    inner.child(RECORDS_DIR).child("blocks").remove_tree()
        epochs.append(owner["epoch"])
    return "-".join(epochs)
