"""Where a flow call's fixed cost goes: one `prefect server start` on loopback, then in this
process a warm-up flow call and interleaved timed calls of `downsample_flow` and the plain
`downsample` on bench.py's SIZE^3 image (stride or mean). For every flow call: each HTTP request
(time from the call's start, duration, method, path, thread), each event the events worker sent,
the phases (call -> flow body, body, body -> return), this process's CPU and the calling
thread's, and the server's CPU over the call and a settle time after it (its idle rate, measured
before, subtracted).

    nice -n 5 python benchmarks/bench_flow_profile.py --size 512 --calls 3 --method stride
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_runs import DEFAULT_ROOT, PrefectServer
from bench_volumes import make_volumes

SETTLE = 3.0  # seconds after a call for the server to store its events


class Recorder:
    """HTTP requests and events of the current call, and its phase times."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.requests: list[tuple[float, float, str, str, str]] = []
        self.events: list[tuple[float, str]] = []
        self.marks: dict[str, float] = {}
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.started = time.perf_counter()
            self.requests, self.events, self.marks = [], [], {}

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter() - self.started


RECORDER = Recorder()
SERVER_CHILDREN: dict[int, list[Any]] = {}  # the server's processes, listed once


def instrument() -> None:
    """Time every httpx request, record every event sent, mark the flow body's start and end."""
    import httpx
    from prefect.events.worker import EventsWorker

    def timed(handle: Any) -> Any:
        def handle_request(self: Any, request: Any) -> Any:
            begun = time.perf_counter()
            try:
                return handle(self, request)
            finally:
                with RECORDER.lock:
                    RECORDER.requests.append(
                        (
                            begun - RECORDER.started,
                            time.perf_counter() - begun,
                            request.method,
                            request.url.path,
                            threading.current_thread().name,
                        )
                    )

        return handle_request

    httpx.HTTPTransport.handle_request = timed(httpx.HTTPTransport.handle_request)
    original_handle = EventsWorker._handle

    async def handle_event(self: Any, event: Any) -> None:
        with RECORDER.lock:
            RECORDER.events.append((time.perf_counter() - RECORDER.started, event.event))
        await original_handle(self, event)

    EventsWorker._handle = handle_event
    import bioimage_tasks.prefect.flows as flows_module

    flows_module.run_in_flow = marking("body", flows_module.run_in_flow)
    import bioimage_tasks.prefect.edge as edge_module

    for name in ("run_merged", "finished"):
        method = getattr(edge_module.PrefectEdge, name, None)
        if method is None:  # an older tree
            continue
        if name == "run_merged":
            setattr(edge_module.PrefectEdge, name, marking_generator(name, method))
        else:
            setattr(edge_module.PrefectEdge, name, marking(name, method))
    build = flows_module.built

    def marked_build(*args: Any) -> Any:
        try:
            return build(*args)
        finally:
            RECORDER.mark("built")

    flows_module.built = marked_build


def marking(name: str, method: Any) -> Any:
    """`method` marking when it starts and when it returns or raises."""

    def call(*args: Any, **kwargs: Any) -> Any:
        RECORDER.mark(f"{name} start")
        try:
            return method(*args, **kwargs)
        finally:
            RECORDER.mark(f"{name} end")

    return call


def marking_generator(name: str, method: Any) -> Any:
    """`method` (a generator method) marking when it starts and when it is exhausted."""

    def call(*args: Any, **kwargs: Any) -> Any:
        RECORDER.mark(f"{name} start")
        yield from method(*args, **kwargs)
        RECORDER.mark(f"{name} end")

    return call


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(process: Any) -> float:
    """The server's CPU seconds, its child processes' included."""
    times = process.cpu_times()
    total = times.user + times.system
    if process.pid not in SERVER_CHILDREN:
        SERVER_CHILDREN[process.pid] = process.children(recursive=True)
    for child in SERVER_CHILDREN[process.pid]:
        try:
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
        except Exception:  # noqa: BLE001 - a child that ended
            pass
    return total


class StackSampler(threading.Thread):
    """Every thread's stack every 2 ms: samples per function (cumulative, once per stack) of
    the threads other than this one, for where the work threads spend their time."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        me = threading.get_ident()
        while not self.stopped.is_set():
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                seen = set()
                while frame is not None:
                    code = frame.f_code
                    seen.add(f"{code.co_name} {Path(code.co_filename).name}:{code.co_firstlineno}")
                    frame = frame.f_back
                for name in seen:
                    self.counts[name] = self.counts.get(name, 0) + 1
            self.samples += 1
            self.stopped.wait(0.002)

    def show(self, lines: int) -> None:
        print(f"stack samples ({self.samples} x 2 ms, all threads but the sampler):")
        for name, count in sorted(self.counts.items(), key=lambda item: -item[1])[:lines]:
            print(f"  {count:6d} {name}")


def flow_call(args: argparse.Namespace, source: str, output: str, server: Any, idle: float) -> dict:
    """One instrumented flow call and its numbers."""
    from flows import downsample_flow

    server_before, cpu_before, thread_before = server_cpu(server), cpu_seconds(), time.thread_time()
    RECORDER.reset()
    stacks = StackSampler()
    if args.sample:
        stacks.start()
    if args.cprofile:
        import cProfile

        with cProfile.Profile() as profile:
            downsample_flow(source, 2, output, num_workers=2, method=args.method)
        profile.print_stats("cumulative") if args.cprofile == "all" else None
        import pstats

        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.cprofile_lines)
    else:
        downsample_flow(source, 2, output, num_workers=2, method=args.method)
    RECORDER.mark("return")
    if args.sample:
        stacks.stopped.set()
        stacks.join()
        stacks.show(args.cprofile_lines)
    wall, cpu, thread = RECORDER.marks["return"], cpu_seconds() - cpu_before, time.thread_time()
    time.sleep(SETTLE)
    window = time.perf_counter() - RECORDER.started
    return {
        "wall": wall,
        "cpu": cpu,
        "thread cpu": thread - thread_before,
        "server cpu": server_cpu(server) - server_before - idle * window,
        "marks": dict(RECORDER.marks),
        "requests": list(RECORDER.requests),
        "events": list(RECORDER.events),
    }


def plain_call(args: argparse.Namespace, source: str, output: str) -> dict:
    from bioimage_tasks import downsample

    cpu_before, started = cpu_seconds(), time.perf_counter()
    downsample(source, 2, output, num_workers=2, method=args.method)
    return {"wall": time.perf_counter() - started, "cpu": cpu_seconds() - cpu_before}


def show_call(number: str, call: dict) -> None:
    marks = call["marks"]
    print(
        f"\nflow call {number}: wall {call['wall']:.3f} s, process CPU {call['cpu']:.3f} s, "
        f"calling thread CPU {call['thread cpu']:.3f} s, server CPU {call['server cpu']:.3f} s"
    )
    print(
        f"  call -> built and body {marks.get('body start', 0):.3f} s, body "
        f"{marks.get('body end', 0) - marks.get('body start', 0):.3f} s, body -> return "
        f"{marks['return'] - marks.get('body end', 0):.3f} s"
    )
    print(
        "  marks: "
        + ", ".join(f"{n} {t:.3f}" for n, t in sorted(marks.items(), key=lambda m: m[1]))
    )
    print(f"  {len(call['requests'])} requests, {sum(r[1] for r in call['requests']):.3f} s:")
    for at, seconds, method, path, thread in sorted(call["requests"]):
        print(f"    {at:7.3f} {1000 * seconds:6.1f} ms {method:6} {path} [{thread}]")
    print(
        f"  {len(call['events'])} events: " + ", ".join(f"{e}@{t:.2f}" for t, e in call["events"])
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--method", default="stride", choices=("stride", "mean"))
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT / "data")
    parser.add_argument("--verbose", action="store_true", help="every request and event")
    parser.add_argument("--cprofile", default="", help="'top': cProfile the calling thread")
    parser.add_argument("--cprofile-lines", type=int, default=60)
    parser.add_argument("--sample", action="store_true", help="sample every thread's stack")
    parser.add_argument(
        "--variants", default="current", help=f"comma-separated, alternating: {', '.join(VARIANTS)}"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import psutil

    args.data.mkdir(parents=True, exist_ok=True)
    make_volumes(args.data, args.size)
    source = str(args.data / f"volumes-{args.size}.zarr" / "image")
    work = Path(tempfile.mkdtemp(prefix="flow-profile-", dir=DEFAULT_ROOT))
    (work / "prefect").mkdir()
    server = PrefectServer(work / "prefect")
    os.environ.update(server.env | {"PREFECT_API_URL": server.url, "OMP_NUM_THREADS": "1"})
    try:
        process = psutil.Process(server.process.pid)
        instrument()
        import numpy as np

        from flows import downsample_flow

        downsample_flow(np.zeros((8, 8, 8), np.uint8), 2, method=args.method)
        plain_call(args, source, str(work / "plain-warm.zarr/x"))
        time.sleep(SETTLE)
        before, started = server_cpu(process), time.perf_counter()
        time.sleep(2.0)
        idle = (server_cpu(process) - before) / (time.perf_counter() - started)
        print(f"server idle CPU {idle:.3f} s/s")
        variants = args.variants.split(",")
        flows: dict[str, list[dict]] = {name: [] for name in variants}
        plains = []
        for number in range(args.calls):
            for name in variants:
                with VARIANTS[name]():
                    output = str(work / f"flow-{name}-{number}.zarr/x")
                    flows[name].append(flow_call(args, source, output, process, idle))
                if args.verbose:
                    show_call(f"{number} ({name})", flows[name][-1])
            plains.append(plain_call(args, source, str(work / f"plain-{number}.zarr/x")))
        for name in variants:
            summarise(name, flows[name], plains)
    finally:
        server.stop()


def head_and_tail(call: dict) -> tuple[float, float]:
    """(call -> first task-run event, last task-run event -> return) in seconds."""
    tasks = [at for at, name in call["events"] if name.startswith("prefect.task-run.")]
    return tasks[0], call["marks"]["return"] - tasks[-1]


def summarise(name: str, flows: list[dict], plains: list[dict]) -> None:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}"

    print(f"\n{name}: medians over {len(flows)} calls")
    print(
        "  flow wall",
        median([c["wall"] for c in flows]),
        "plain",
        median([c["wall"] for c in plains]),
    )
    print(
        "  flow CPU", median([c["cpu"] for c in flows]), "plain", median([c["cpu"] for c in plains])
    )
    print("  flow thread CPU", median([c["thread cpu"] for c in flows]))
    print("  server CPU per call", median([c["server cpu"] for c in flows]))
    print("  call -> first task event", median([head_and_tail(c)[0] for c in flows]))
    print("  last task event -> return", median([head_and_tail(c)[1] for c in flows]))
    print("  requests", median([len(c["requests"]) for c in flows]))
    print("  events", median([len(c["events"]) for c in flows]))


@contextlib.contextmanager
def patched(module: str, name: str, value: Any) -> Iterator[None]:
    """`module.name` set to `value` for a variant's call."""
    target = importlib.import_module(module)
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def own_client() -> Any:
    from prefect.context import SyncClientContext

    return patched(
        "bioimage_tasks.prefect.flow_class", "api_client_context", SyncClientContext.get_or_create
    )


VARIANTS: dict[str, Any] = {  # how a call runs: as the tree has it, or with one change undone
    "current": contextlib.nullcontext,
    "own-client": own_client,
    "batch-per-worker": lambda: patched(
        "bioimage_tasks.prefect.edge",
        "PrefectEdge",
        type(
            "BatchPerWorkerEdge",
            (importlib.import_module("bioimage_tasks.prefect.edge").PrefectEdge,),
            {"tasks_per_worker": 1},
        ),
    ),
    "task-per-batch": lambda: patched(
        "bioimage_tasks.prefect.edge",
        "PrefectEdge",
        type(
            "TaskPerBatchEdge",
            (importlib.import_module("bioimage_tasks.prefect.edge").PrefectEdge,),
            {"merges": lambda self, batches: False},
        ),
    ),
}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
