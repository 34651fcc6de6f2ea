"""The command line, run as a real process against the session's Prefect API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from helpers import zarr_input
from reference import skimage_downsample

pytestmark = pytest.mark.usefixtures("prefect_server")


def cli(*args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "bioimage_tasks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture
def image_path(tmp_path, rng):
    image = rng.integers(0, 255, (30, 34, 26), dtype=np.uint8)
    return zarr_input(tmp_path, image, (8, 8, 8)), image


def test_downsample_and_copy(tmp_path, image_path):
    path, image = image_path
    done = cli(
        "downsample",
        path,
        f"{tmp_path}/out.zarr/s1",
        "--factor",
        "1,2,2",
        "--order",
        "1",
        "--anti-aliasing",
        "--workers",
        "2",
        "--block-shape",
        "8,8,8",
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "(30, 17, 13) uint8" in done.stderr
    expected = np.clip(np.rint(skimage_downsample(image, (1, 2, 2), 1, True)), 0, 255)
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "out.zarr"), path="s1")[:], expected
    )
    copied = cli("copy", f"{tmp_path}/out.zarr/s1", f"{tmp_path}/out.n5/s1", "--quiet")
    assert copied.returncode == 0 and copied.stdout == "" and copied.stderr == "", copied.stderr


def test_pyramid(tmp_path, image_path):
    path, image = image_path
    done = cli(
        "pyramid",
        path,
        f"{tmp_path}/image.zarr",
        "--factors",
        "2;1,2,2",
        "--method",
        "mean",
        "--voxel-size",
        "1.0,0.5,0.5",
        "--units",
        "micrometer",
        "--chunks",
        "8,8,8",
    )
    assert done.returncode == 0, done.stderr
    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="r")
    assert group["s2"].shape == (15, 9, 7)
    scales = [
        d["coordinateTransformations"][0]["scale"]
        for d in group.attrs["ome"]["multiscales"][0]["datasets"]
    ]
    assert scales == [[1.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]


def test_bad_argument_prints_one_line(tmp_path, image_path):
    path, _ = image_path
    failed = cli("downsample", path, f"{tmp_path}/out.zarr/s1", "--order", "9")
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("bioimage-tasks downsample: running "), (
        failed.stderr
    )  # says which engine
    assert lines[1:] == ["error: ParameterError: order must be an integer from 0 to 5, got 9"], (
        failed.stderr
    )
    assert "Traceback" not in failed.stderr + failed.stdout
    missing = cli("copy", f"{tmp_path}/nothing.zarr/raw", f"{tmp_path}/o.zarr/raw")
    assert missing.returncode == 1 and "FileNotFoundError: input: no zarr array" in missing.stderr
    unparsable = cli("downsample", path, f"{tmp_path}/out.zarr/s1", "--factor", "2,x")
    assert (
        unparsable.returncode == 2
        and "--factor must be comma-separated integers" in unparsable.stderr
    )
    debug = cli("downsample", path, f"{tmp_path}/out.zarr/s1", "--order", "9", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_pyramid_refuses_zero_chunks_at_once(tmp_path, image_path):
    path, _ = image_path
    failed = cli("pyramid", path, f"{tmp_path}/image.zarr", "--levels", "1", "--chunks", "0,16,16")
    assert failed.returncode == 1
    message = "ParameterError: chunks must be 3 integers >= 1, one per axis, got (0, 16, 16)"
    assert message in failed.stderr
    assert not os.path.exists(tmp_path / "image.zarr")


def test_help_explains_every_option():
    shown = cli("downsample", "--help")
    assert shown.returncode == 0
    for option in (
        "--factor",
        "--order",
        "--anti-aliasing",
        "--job-type",
        "--workers",
        "--block-shape",
        "--mask",
        "--block-ids",
        "--quiet",
        "--debug",
    ):
        assert option in shown.stdout
    assert "copy" in cli("--help").stdout


def test_pyramid_from_an_ome_tiff_in_one_command(tmp_path, rng):
    import tifffile

    image = rng.integers(0, 255, (16, 96, 80), dtype=np.uint8)
    tiff = str(tmp_path / "stack.ome.tif")
    tifffile.imwrite(
        tiff,
        image,
        tile=(32, 32),
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeZ": 1.0,
        },
    )
    done = cli("pyramid", tiff, f"{tmp_path}/out.ome.zarr", "--levels", "3", "--chunks", "16,32,32")
    assert done.returncode == 0, done.stderr
    multiscale = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r").attrs["ome"][
        "multiscales"
    ][0]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1.0, 0.25, 0.25], [1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    assert {a["unit"] for a in multiscale["axes"]} == {"micrometer"}
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "out.ome.zarr"), path="s0")[:], image
    )

    shown = cli("info", tiff)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert {k: v.strip() for k, v in lines.items()} == {
        "kind": "OME-TIFF, series 0",
        "shape": "(16, 96, 80)",
        "dtype": "uint8",
        "chunks": "(1, 32, 32)",
        "voxel size": "(1.0, 0.25, 0.25)",
        "units": "('micrometer', 'micrometer', 'micrometer')",
        "axes": "('z', 'y', 'x')",
        "origin": "-",
    }
    level = cli("info", f"{tmp_path}/out.ome.zarr/s1")
    assert (
        "kind:        OME-Zarr image, level s1 (zarr v3)" in level.stdout
        and "(1.0, 0.5, 0.5)" in level.stdout
    )


def test_info_of_hdf5_and_errors(tmp_path):
    import h5py

    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("g/raw", shape=(10, 20), dtype="float32", chunks=(5, 10))
    shown = cli("info", f"{tmp_path}/d.h5/g/raw")
    assert (
        shown.returncode == 0
        and "kind:        HDF5" in shown.stdout
        and "chunks:      (5, 10)" in shown.stdout
    )
    missing = cli("info", f"{tmp_path}/d.h5/nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: FileNotFoundError: input: 'nope' in"), (
        missing.stderr
    )


INTERRUPTED = "rerun the same command to resume (finished blocks are skipped)"


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> tuple[list[str], np.ndarray]:
    """The arguments of a run that takes 10-20 s once its temporary Prefect server is up (a cubic,
    anti-aliased resize of a 256^3 float32 image in 512 blocks of 16^3 on one thread) and
    scikit-image's result for it."""
    image = np.random.default_rng(7).standard_normal((256, 256, 256)).astype(np.float32)
    source = zarr_input(tmp_path_factory.mktemp("interrupt"), image, (32, 32, 32))
    arguments = [
        source,
        "--factor",
        "2",
        "--order",
        "3",
        "--anti-aliasing",
        "--block-shape",
        "16,16,16",
    ]
    return arguments, skimage_downsample(image, (2, 2, 2), 3, True)


@pytest.fixture
def start_cli():
    """Start the CLI as a user does: its own process group (a terminal's job), no Prefect API
    configured (so Prefect starts a temporary server as a child process). Whatever a failed test
    leaves of those groups is killed."""
    started = []

    def start(*args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
        command = [sys.executable, "-m", "bioimage_tasks.cli", *args]
        started.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
        )
        return started[-1]

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def chunk_files(array_dir) -> dict[str, int]:
    """The chunk files of a zarr v3 array, with their modification times."""
    found = {}
    for folder, _, names in os.walk(os.path.join(array_dir, "c")):
        for name in names:
            found[os.path.join(folder, name)] = os.stat(os.path.join(folder, name)).st_mtime_ns
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, to_group, engine",
    [
        (signal.SIGINT, True, "--prefect"),
        (signal.SIGTERM, False, "--prefect"),
        (signal.SIGINT, True, "plain"),
    ],
    ids=["ctrl-c-to-process-group", "sigterm-to-process", "ctrl-c-plain-engine"],
)
def test_an_interrupted_run_exits_in_seconds_and_a_rerun_resumes(
    tmp_path, long_run, start_cli, signum, to_group, engine
):
    """Ctrl-C (SIGINT to the process group, the temporary Prefect server of a --prefect run
    included) or SIGTERM ends the run within seconds with one line (after the line naming the
    engine) and 130 / 143, leaves no Prefect server behind, and the same command then completes
    the output, keeping the blocks finished before."""
    import psutil

    arguments, expected = long_run
    output = tmp_path / "out.zarr" / "s1"
    command = [
        "downsample",
        arguments[0],
        str(output),
        *arguments[1:],
        *([engine] if engine != "plain" else []),
    ]
    running = start_cli(*command)
    started = time.monotonic()
    while len(chunk_files(output)) < 3:  # blocks are being written: the server is up, the run on
        assert running.poll() is None, running.communicate()[1]
        assert time.monotonic() - started < 300, "no block written after 300 s"
        time.sleep(0.1)
    children = psutil.Process(running.pid).children(recursive=True)
    server = any("prefect.server.api.server" in " ".join(child.cmdline()) for child in children)
    assert server == (engine == "--prefect")  # the plain engine starts no server
    assert running.poll() is None
    signalled = time.monotonic()
    (os.killpg if to_group else os.kill)(running.pid, signum)
    _, stderr = running.communicate(timeout=60)
    assert time.monotonic() - signalled < 10
    assert running.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[0].startswith("bioimage-tasks downsample: running "), stderr
    assert lines[1:] == [f"interrupted by {name}: {INTERRUPTED}"], stderr
    time.sleep(0.5)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not left, [c.cmdline() for c in left]

    written = chunk_files(output)
    assert 0 < len(written) < 8**3  # interrupted in the middle
    rerun = start_cli(*command)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    np.testing.assert_allclose(
        zarr.open_array(str(output), mode="r")[:],
        expected,
        rtol=0,
        atol=1e-3 * float(np.ptp(expected)),
    )
    kept = [path for path, mtime in chunk_files(output).items() if written.get(path) == mtime]
    assert kept, "the rerun rewrote every block: it did not resume"
