"""Small files of a local `convert` run in worker processes (bioimage_tasks/convert_processes.py):
how they start, which files they take, and what a killed run leaves."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorstore as ts
import tifffile
import zarr

import bioimage_tasks as bt
from bioimage_tasks import convert_processes
from bioimage_tasks.convert_processes import small_inputs

MANY = 80  # stacks: the run lasts a few seconds, long enough to be stopped in the middle


def writers(output_dir: str) -> set[int]:
    """The processes that wrote block records or hold leases in the images of `output_dir`."""
    logs = glob.glob(f"{output_dir}/*.ome.zarr/.bioimage-tasks/blocks/*/*/*.log")
    leases = glob.glob(f"{output_dir}/*.ome.zarr/.bioimage-tasks/lease/*.json")
    return {int(os.path.basename(p).rsplit("-", 2)[1]) for p in logs} | {
        int(os.path.basename(p).split(":")[1]) for p in leases
    }


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stacks(folder, rng, count: int, shape=(8, 40, 56)) -> dict[str, np.ndarray]:
    folder.mkdir()
    written = {f"s{i:02d}": rng.integers(0, 60000, shape, dtype=np.uint16) for i in range(count)}
    for name, stack in written.items():
        tifffile.imwrite(folder / f"{name}.ome.tif", stack, metadata={"axes": "ZYX"})
    return written


def assert_exact(out: str, written: dict[str, np.ndarray]) -> None:
    for name, stack in written.items():
        image = zarr.open_group(f"{out}/{name}.ome.zarr", mode="r")
        np.testing.assert_array_equal(image["s0"][:], stack)
        expected = ts.downsample(ts.array(stack), [2, 2, 2], "mean").read().result()
        np.testing.assert_array_equal(image["s1"][:], expected)


def test_workers_are_forked_only_from_a_process_without_other_threads(tmp_path, rng):
    written, out = stacks(tmp_path / "in", rng, 3), str(tmp_path / "out")
    script = textwrap.dedent(
        f"""
        import os, threading
        import tensorstore as ts
        import bioimage_tasks
        from bioimage_tasks.convert_processes import start_context
        print(start_context().get_start_method(), os.getpid())
        report = bioimage_tasks.convert("{tmp_path}/in/*.ome.tif", "{out}", levels=1, num_workers=2)
        print(report.ok)
        waiting = threading.Thread(target=threading.Event().wait, daemon=True)
        waiting.start()
        print(start_context().get_start_method())
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    method, pid, ok, then = run.stdout.split()
    assert (method, ok, then) == ("fork", "True", "forkserver")
    assert_exact(out, written)
    assert int(pid) not in writers(out) != set()  # converted by the forked workers
    tensorstore_used = script.replace(
        "waiting.start()",
        "ts.open({'driver': 'zarr3', 'kvstore': 'memory://', 'metadata': "
        "{'shape': [4], 'data_type': 'uint8'}}, create=True).result()",
    ).replace("levels=1", "levels=1, dry_run=True")
    run = subprocess.run([sys.executable, "-c", tensorstore_used], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "forkserver"  # tensorstore's pool runs threads


def test_only_small_files_go_to_processes_and_large_ones_run_here(tmp_path, rng, monkeypatch):
    written = stacks(tmp_path / "in", rng, 3)
    written["s03"] = rng.integers(0, 60000, (16, 40, 56), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in" / "s03.ome.tif", written["s03"], metadata={"axes": "ZYX"})
    files = {name: str(tmp_path / "in" / f"{name}.ome.tif") for name in written}
    assert small_inputs(files, 1) == {}  # one worker: nothing to gain
    assert small_inputs(dict(list(files.items())[:1]), 2) == {}  # one file: only a start
    assert small_inputs(files, 2) == files
    big = tmp_path / "big.raw"
    big.write_bytes(b"x")
    os.truncate(big, convert_processes.SMALL_FILE_BYTES + 1)  # sparse: only its size counts
    assert small_inputs(files | {"big": str(big)}, 2) == files
    monkeypatch.setattr(convert_processes, "SMALL_FILE_BYTES", os.stat(files["s00"]).st_size)
    out = str(tmp_path / "out")
    report = bt.convert(f"{tmp_path}/in/*.ome.tif", out, levels=1, num_workers=2)
    assert report.ok and [f.outcome for f in report.files] == ["converted"] * 4
    assert_exact(out, written)
    large = glob.glob(f"{out}/s03.ome.zarr/.bioimage-tasks/blocks/*/*/*.log")
    assert {int(os.path.basename(p).rsplit("-", 2)[1]) for p in large} == {os.getpid()}
    in_workers = writers(out) - {os.getpid()}
    assert in_workers and not any(alive(pid) for pid in in_workers)  # they ended with the run

    def refused(*args, **kwargs):
        raise AssertionError("a rerun of a converted folder started worker processes")

    monkeypatch.setattr(convert_processes, "ProcessPoolExecutor", refused)
    again = bt.convert(f"{tmp_path}/in/*.ome.tif", out, levels=1, num_workers=2)
    assert [f.outcome for f in again.files] == ["skipped"] * 4


class CliRun:
    """`bioimage-tasks convert` of MANY stacks on 2 workers, in its own process group, its output
    in a log file (a pipe would wait for every orphan's end), running until a worker has written."""

    def __init__(self, tmp_path, rng):
        self.written = stacks(tmp_path / "in", rng, MANY, shape=(32, 128, 128))
        self.out, self.log_path = str(tmp_path / "out"), tmp_path / "run.log"
        command = ["-m", "bioimage_tasks.cli", "convert", f"{tmp_path}/in/*.ome.tif", self.out]
        self.arguments = [sys.executable, *command, "--levels", "1", "--workers", "2"]
        self.env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        with open(self.log_path, "w") as log:
            self.run = subprocess.Popen(
                self.arguments, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        deadline, self.seen = time.monotonic() + 120, set()
        while time.monotonic() < deadline and self.run.poll() is None and not self.seen:
            self.seen = writers(self.out)  # a lease alone goes with its unwound conversion
            time.sleep(0.01)
        assert self.run.poll() is None, "the run ended before it could be stopped"

    def workers_end(self, since: float) -> None:
        """Every process that wrote a record or holds a lease ends within 15 s of `since`."""
        started = self.seen | writers(self.out)
        assert started and self.run.pid not in started  # the files ran in worker processes
        while time.monotonic() < since + 15 and any(alive(pid) for pid in started):
            time.sleep(0.05)
        assert not any(alive(pid) for pid in started), "a worker outlived its run"

    def rerun_finishes(self) -> None:
        again = subprocess.run(self.arguments, env=self.env, capture_output=True, text=True)
        assert again.returncode == 0, again.stdout[-1500:] + again.stderr
        assert f"{MANY} of {MANY} files ok" in again.stdout
        assert_exact(self.out, self.written)


def test_a_killed_run_leaves_no_worker_and_the_rerun_finishes(tmp_path, rng):
    cli = CliRun(tmp_path, rng)
    cli.run.send_signal(signal.SIGKILL)
    cli.run.wait()
    cli.workers_end(time.monotonic())
    cli.rerun_finishes()


def test_ctrl_c_ends_the_run_and_its_workers_within_seconds(tmp_path, rng):
    cli = CliRun(tmp_path, rng)
    os.killpg(cli.run.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    interrupted = time.monotonic()
    assert cli.run.wait(timeout=30) == 130
    cli.workers_end(interrupted)
    assert "rerun the same command to resume" in cli.log_path.read_text()
    cli.rerun_finishes()
