"""Measuring a process tree for benchmarks/igneous.py: `measure_main` runs a command as a child
subreaper and reports the tree's CPU seconds, peak PSS (summed over every process, sampled every
50 ms) and bytes read (`rchar` and `read_bytes` of /proc/self/io once the tree is reaped)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading

PROC_READS = [0]  # bytes the measuring process read from /proc itself (not the tree's reads)


# ---------------------------------------------------------------- measuring a process tree


def descendants(pid: int) -> list[int]:
    """`pid`'s live descendants (through /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    text = f.read()
                PROC_READS[0] += len(text)
                children = [int(c) for c in text.split()]
                found += children
                todo += children
        except OSError:
            continue
    return found


def pss_bytes(pid: int) -> tuple[int, int]:
    """(PSS bytes of `pid`, bytes read to learn it)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            text = f.read()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        if line.startswith(b"Pss:"):
            return int(line.split()[1]) * 1024, len(text)
    return 0, len(text)


def io_counts() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}


def measure_main(command: list[str]) -> None:
    """Run `command` as a child subreaper: its whole tree is reaped here, so /proc/self/io then
    holds every byte the tree read; the tree's PSS is summed every 50 ms. Prints JSON."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    before, times = io_counts(), os.times()
    own_reads, peak = 0, 0
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal own_reads, peak
        while not done.is_set():
            total = 0
            for pid in [child.pid, *descendants(child.pid)]:
                pss, read = pss_bytes(pid)
                total, own_reads = total + pss, own_reads + read
            peak = max(peak, total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = child.communicate()[0]
    while True:  # orphans (pool workers) are ours to reap
        try:
            os.wait()
        except ChildProcessError:
            break
    done.set()
    sampler.join()
    after, spent = io_counts(), os.times()
    result = json.loads(out.strip().splitlines()[-1]) if child.returncode == 0 else {}
    result |= {
        "returncode": child.returncode,
        "peak_pss": peak,
        "rchar": after["rchar"] - before["rchar"] - own_reads - PROC_READS[0] - len(out),
        "read_bytes": after["read_bytes"] - before["read_bytes"],
        "cpu": spent.children_user
        + spent.children_system
        - times.children_user
        - times.children_system,
    }
    print(json.dumps(result), flush=True)
