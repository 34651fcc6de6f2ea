"""A writer killed mid-write leaves tensorstore's `<chunk>.__lock` file with its bytes; the next
write of that chunk must still produce a chunk that decodes to what was written (issue 14: a
resumed run's records vouched for a torn chunk). Real tensorstore writes, real SIGKILLs, real files;
every chunk is decoded by zarr-python or a fresh tensorstore handle, never through our code."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import zarr_input
from reference import random_array, skimage_downsample

from bioimage_tasks.io import ArraySource, TensorStoreSource
from bioimage_tasks.io.chunk_files import (
    LOCK_SUFFIX,
    clear_stale_locks,
    local_layout,
    remove_if_stale,
)
from flows import copy_flow, downsample_flow

SHAPE = (40, 36, 36)
CHUNKS = (16, 16, 16)


def plant_stale_locks(array_dir: str, size: int = 100_000) -> list[str]:
    """A dead writer's lock file, larger than any real chunk, beside every chunk file (and
    beside a chunk not written yet); nobody holds them."""
    chunk_files = [
        p
        for p in glob.glob(f"{array_dir}/**/*", recursive=True)
        if os.path.isfile(p)
        and not os.path.basename(p).startswith((".", "zarr.json", "attributes"))
        and ".bioimage-tasks" not in p
    ]
    assert chunk_files, array_dir
    locks = [p + LOCK_SUFFIX for p in chunk_files]
    rng = np.random.default_rng(0)
    for lock in locks:
        with open(lock, "wb") as stream:
            stream.write(rng.integers(0, 256, size, np.uint8).tobytes())
    return locks


@pytest.mark.parametrize("layout", ["zarr3", "zarr3-sharded", "zarr2", "n5"])
def test_a_new_computation_over_dead_writers_locks_writes_whole_chunks(
    tmp_path, layout, prefect_server
):
    """B writes an output and is 'killed' (its lock files stay, with bytes); A then takes over the
    output. Every chunk decodes and holds A's result."""
    image = random_array(np.random.default_rng(3), SHAPE, "uint8")
    source = zarr_input(tmp_path, image, CHUNKS)
    container = "out.n5" if layout == "n5" else "out.zarr"
    if layout == "zarr2":
        zarr.open_group(f"{tmp_path}/{container}", mode="w", zarr_format=2)
    output = f"{tmp_path}/{container}/s1"
    shards = {"output_options": {"shards": (16, 16, 16)}} if layout == "zarr3-sharded" else {}
    downsample_flow(
        source, 2, output, order=1, block_shape=(8, 8, 8) if not shards else None, **shards
    )
    locks = plant_stale_locks(output)
    result = downsample_flow(
        source, 2, output, order=0, block_shape=(8, 8, 8) if not shards else None
    )
    assert not any(os.path.exists(lock) for lock in locks)
    expected = np.clip(np.rint(skimage_downsample(image, (2, 2, 2), 0, False)), 0, 255).astype(
        np.uint8
    )
    reread = (
        ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": output}})
        .result()
        .read()
        .result()
        if layout == "n5"
        else zarr.open_array(output, mode="r")[:]
    )
    np.testing.assert_array_equal(reread, expected)
    np.testing.assert_array_equal(np.asarray(result[:]), expected)


def test_copy_into_an_array_whose_writer_was_killed(tmp_path, prefect_server):
    """A copy (the same computation resuming after a kill) over stale lock files."""
    image = random_array(np.random.default_rng(4), SHAPE, "uint16")
    zarr_input(tmp_path, image, CHUNKS)
    out = zarr.create_array(
        store=f"{tmp_path}/out.zarr", name="raw", shape=SHAPE, dtype="uint16", chunks=CHUNKS
    )
    out[:] = 1  # every chunk file exists, as after a partial run
    locks = plant_stale_locks(f"{tmp_path}/out.zarr/raw")
    copy_flow(f"{tmp_path}/in.zarr/raw", f"{tmp_path}/out.zarr/raw")
    assert not any(os.path.exists(lock) for lock in locks)
    np.testing.assert_array_equal(zarr.open_array(f"{tmp_path}/out.zarr/raw", mode="r")[:], image)


HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    handle = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(handle, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_lock_a_live_writer_holds_is_left_alone(tmp_path):
    """Only unheld lock files are removed: a live writer (another process holding the lock) will
    rename its file into place itself."""
    lock = tmp_path / f"0{LOCK_SUFFIX}"
    lock.write_bytes(b"in progress")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not remove_if_stale(str(lock)) and lock.read_bytes() == b"in progress"
    finally:
        holder.kill()
        holder.wait()
    assert remove_if_stale(str(lock)) and not lock.exists()
    assert not remove_if_stale(str(lock))  # absent: nothing to do


def test_only_the_locks_of_the_written_region_are_touched(tmp_path):
    array = zarr.create_array(
        store=f"{tmp_path}/a.zarr", name="x", shape=(8, 8), dtype="uint8", chunks=(4, 4)
    )
    array[:] = 7
    sink = ArraySource(array, "x")
    layout = local_layout(sink)
    for name in ("0/0", "0/1", "1/1"):
        (tmp_path / "a.zarr" / "x" / "c" / f"{name}{LOCK_SUFFIX}").write_bytes(b"dead writer")
    assert clear_stale_locks(layout, (8, 8), (slice(0, 4), slice(None))) == 2
    assert (tmp_path / "a.zarr" / "x" / "c" / f"1/1{LOCK_SUFFIX}").exists()
    n5 = TensorStoreSource(
        ts.open(
            {
                "driver": "n5",
                "kvstore": {"driver": "file", "path": f"{tmp_path}/b.n5/x"},
                "metadata": {"dimensions": [8, 8], "blockSize": [4, 4], "dataType": "uint8"},
                "create": True,
            }
        ).result(),
        "x",
    )
    assert local_layout(n5)[1:] == ((4, 4), "", "/")
    (tmp_path / "b.n5" / "x" / "1").mkdir(parents=True)
    (tmp_path / "b.n5" / "x" / "1" / f"0{LOCK_SUFFIX}").write_bytes(b"dead writer")
    n5.write((slice(4, 8), slice(0, 4)), np.full((4, 4), 5, np.uint8))
    assert not (tmp_path / "b.n5" / "x" / "1" / f"0{LOCK_SUFFIX}").exists()
    np.testing.assert_array_equal(
        ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": f"{tmp_path}/b.n5/x"}})
        .result()[4:8, 0:4]
        .read()
        .result(),
        5,
    )


WRITER = textwrap.dedent("""
    import sys, numpy as np, zarr
    from bioimage_tasks.io import ArraySource
    sink = ArraySource(zarr.open_array(sys.argv[1], mode="r+"))
    noise = np.random.default_rng(1).integers(0, 256, sink.shape, np.uint8)  # incompressible
    while True:  # large chunks: most of the time is spent inside a write
        sink.write((slice(None),), noise)
""")


def test_sigkill_mid_write_then_resume_decodes_every_chunk(tmp_path):
    """A real writer SIGKILLed while its lock file holds part of a 32 MB chunk of noise; the next
    write of that chunk (a constant: a few bytes compressed), through our sink, gives a chunk that
    decodes to exactly what it wrote, not its bytes followed by the dead writer's tail."""
    path = f"{tmp_path}/big.zarr/x"
    zarr.create_array(
        store=f"{tmp_path}/big.zarr",
        name="x",
        shape=(2**25,),
        dtype="uint8",
        chunks=(2**25,),
        fill_value=0,
    )
    lock = f"{path}/c/0{LOCK_SUFFIX}"
    for _ in range(20):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, path])
        deadline = time.monotonic() + 60
        while not os.path.exists(lock) and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(0.005)  # into the write itself
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if os.path.exists(lock) and os.path.getsize(lock) > 0:
            break
    else:
        pytest.fail("no kill landed inside a write in 20 tries")
    constant = np.full(2**25, 255, np.uint8)
    ArraySource(zarr.open_array(path, mode="r+")).write((slice(None),), constant)
    assert not os.path.exists(lock)
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], constant)
