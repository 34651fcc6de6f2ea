"""Resume never vouches for stale data, on real flows, files and Prefect: an output knows which
computation its blocks hold (A, B, A recomputes; A, A resumes), rewritten inputs and masks are
recomputed exactly where they changed, a live run's lease refuses another computation and
expires when its run dies, and records stay consistent under concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import SlowSource, executed_since, record_times, records_dir, wait_for, zarr_input
from reference import random_array, skimage_downsample

from bioimage_tasks import BlockGrid, copy, downsample, pyramid
from bioimage_tasks.io import as_source
from bioimage_tasks.lease import (
    Holder,
    LeaseHeldError,
    _acquire,
    claim_ownership,
    holders,
    output_lease,
    owned_epoch,
)
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.resampling import ResizedSource
from bioimage_tasks.runners import LocalClusterConfig
from flows import copy_flow, downsample_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (48, 40, 40)
OUT_SHAPE = (24, 20, 20)
BLOCK = (8, 8, 8)
N_BLOCKS = BlockGrid(OUT_SHAPE, BLOCK).n_blocks
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def volume(tmp_path):
    image = random_array(np.random.default_rng(21), SHAPE, "uint8")
    zarr_input(tmp_path, image, (16, 16, 16))
    return tmp_path, image


def resized(image, order, anti_aliasing=False):
    reference = skimage_downsample(image, (2, 2, 2), order, anti_aliasing)
    return np.clip(np.rint(reference), 0, 255).astype(np.uint8)


def window_mean(image):
    return ts.downsample(ts.array(image), [2, 2, 2], "mean").read().result()


@pytest.mark.parametrize("run", [downsample_flow, downsample], ids=["flow", "plain"])
def test_a_b_a_recomputes_and_a_a_resumes(volume, run):
    root, image = volume
    output = f"{root}/out.zarr/s1"
    a = {"order": 0, "block_shape": BLOCK}
    run(f"{root}/in.zarr/raw", 2, output, **a)
    b = run(f"{root}/in.zarr/raw", 2, output, order=1, anti_aliasing=True, block_shape=BLOCK)
    np.testing.assert_array_equal(b[:], resized(image, 1, True))
    started = time.time()
    again = run(f"{root}/in.zarr/raw", 2, output, **a)
    assert executed_since(output, started) == set(range(N_BLOCKS))  # B's writes voided A's records
    np.testing.assert_array_equal(again[:], resized(image, 0))
    before, started = record_times(output), time.time()
    run(f"{root}/in.zarr/raw", 2, output, num_workers=2, **a)
    assert executed_since(output, started) == set() and record_times(output) == before


def test_b_then_a_after_a_kill(volume, subprocess_env):
    """B is SIGKILLed part-way (it held the output's lease); A then runs at once, recomputes every
    block (B wrote some) and the output is A's."""
    root, image = volume
    output = f"{root}/out.zarr/s1"
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(TESTS_DIR, "resume_job.py"),
            f"{root}/in.zarr/raw",
            output,
            "local",
            "0.3",
        ],
        env=subprocess_env,
    )
    try:
        wait_for(
            lambda: (
                os.path.isdir(f"{output}/.bioimage-tasks/blocks")
                and len(BlockRecords(records_dir(output)).done()) >= 3
            ),
            120,
        )
        assert holders(output)[1], "the running flow holds the output's lease"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert holders(output) == (None, [])  # its process is gone: the lease has expired
    started = time.time()
    result = downsample_flow(f"{root}/in.zarr/raw", 2, output, order=0, block_shape=BLOCK)
    assert executed_since(output, started) == set(range(N_BLOCKS))
    np.testing.assert_array_equal(result[:], resized(image, 0))


def blocks_reading(view, region):
    """Blocks of the output grid whose input region overlaps `region` of the input."""
    grid = BlockGrid(view.shape, BLOCK)
    return {
        b
        for b in range(grid.n_blocks)
        if all(
            r.start < s.stop and s.start < r.stop
            for r, s in zip(view.input_region(grid.block_slices(b)), region)
        )
    }


def test_input_rewritten_through_zarr_python(volume):
    root, image = volume
    output = f"{root}/out.zarr/s1"
    kwargs = {"order": 1, "anti_aliasing": True, "block_shape": BLOCK}
    downsample_flow(f"{root}/in.zarr/raw", 2, output, **kwargs)
    changed = (slice(16, 32), slice(0, 16), slice(16, 32))  # one input chunk, rewritten in place
    new = image.copy()
    new[changed] = 255 - image[changed]
    zarr.open_array(f"{root}/in.zarr/raw", mode="r+")[changed] = new[changed]
    expected = blocks_reading(
        ResizedSource(as_source(f"{root}/in.zarr/raw"), OUT_SHAPE, 1, True), changed
    )
    grid = BlockGrid(OUT_SHAPE, BLOCK)
    old_ref, new_ref = resized(image, 1, True), resized(new, 1, True)
    differing = {
        b
        for b in range(N_BLOCKS)
        if not np.array_equal(old_ref[grid.block_slices(b)], new_ref[grid.block_slices(b)])
    }
    assert differing and differing <= expected < set(range(N_BLOCKS))
    started = time.time()
    result = downsample_flow(f"{root}/in.zarr/raw", 2, output, **kwargs)
    assert executed_since(output, started) == expected
    np.testing.assert_array_equal(result[:], new_ref)


def test_input_rewritten_through_tensorstore(volume):
    """Window means: each 8^3 output block reads exactly one 16^3 input chunk."""
    root, image = volume
    output = f"{root}/out.zarr/s1"
    downsample_flow(f"{root}/in.zarr/raw", 2, output, method="mean", block_shape=BLOCK)
    store = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{root}/in.zarr/raw"}}
    ).result()
    new = image.copy()
    new[32:48, 16:32, 0:16] += 1
    store[32:48, 16:32, 0:16] = new[32:48, 16:32, 0:16]
    started = time.time()
    result = downsample_flow(f"{root}/in.zarr/raw", 2, output, method="mean", block_shape=BLOCK)
    grid = BlockGrid(OUT_SHAPE, BLOCK)
    (changed,) = [
        b
        for b in range(N_BLOCKS)
        if grid.block_slices(b)[:3] == (slice(16, 24), slice(8, 16), slice(0, 8))
    ]
    assert executed_since(output, started) == {changed}
    np.testing.assert_array_equal(result[:], window_mean(new))


def test_mask_rewritten(volume):
    root, image = volume
    output = f"{root}/out.zarr/s1"
    mask = np.zeros(OUT_SHAPE, bool)
    mask[2:10, 3:12, 1:7] = True
    zarr_input(root, mask, (8, 8, 8), name="mask")
    kwargs = {"method": "mean", "block_shape": BLOCK, "mask": f"{root}/in.zarr/mask"}
    downsample_flow(f"{root}/in.zarr/raw", 2, output, **kwargs)
    grown = mask.copy()
    grown[17:23, 9:15, 9:15] = True  # inside one block (and one mask chunk) only
    zarr.open_array(f"{root}/in.zarr/mask", mode="r+")[16:24, 8:16, 8:16] = grown[16:24, 8:16, 8:16]
    started = time.time()
    result = downsample_flow(f"{root}/in.zarr/raw", 2, output, **kwargs)
    grid = BlockGrid(OUT_SHAPE, BLOCK)
    touched = {
        b
        for b in range(N_BLOCKS)
        if not np.array_equal(mask[grid.block_slices(b)], grown[grid.block_slices(b)])
    }
    assert len(touched) == 1 and executed_since(output, started) == touched
    np.testing.assert_array_equal(result[:], np.where(grown, window_mean(image), 0))


def test_numpy_input_changed_and_restored(volume):
    """A content hash per block: a change recomputes its blocks, and so does undoing it (the
    latest record wins, so the older record with the restored content's hash does not count)."""
    root, image = volume
    output = f"{root}/out.zarr/s1"
    data = image.copy()
    copy_flow(data, output, block_shape=(16, 16, 16))
    data[0:16, 0:16, 0:16] = 7
    started = time.time()
    copy_flow(data, output, block_shape=(16, 16, 16))
    assert executed_since(output, started) == {0}
    data[0:16, 0:16, 0:16] = image[0:16, 0:16, 0:16]
    started = time.time()
    result = copy_flow(data, output, block_shape=(16, 16, 16))
    assert executed_since(output, started) == {0}
    np.testing.assert_array_equal(result[:], image)


def race(run_a, run_b, output, gate):
    """Start A (its reads wait for the file `gate`), wait until it holds the output's lease, run
    B, then let A go: A is alive, holding its lease, for all of B's attempt."""
    results: dict[str, object] = {}

    def call(name, fn):
        try:
            results[name] = fn()
        except Exception as error:  # noqa: BLE001 - inspected below
            results[name] = error

    first = threading.Thread(target=call, args=("a", run_a))
    first.start()
    wait_for(lambda: holders(output)[1], 120, interval=0.05)
    call("b", run_b)
    open(gate, "w").close()
    first.join()
    return results


@pytest.mark.parametrize("job_type", ["local", pytest.param("subprocess", marks=pytest.mark.slow)])
def test_two_computations_racing(volume, job_type, monkeypatch):
    root, image = volume
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    )
    output = f"{root}/out.zarr/s1"
    config = LocalClusterConfig(worker_timeout=120) if job_type == "subprocess" else None
    common = {"block_shape": BLOCK, "job_type": job_type, "num_workers": 2, "job_config": config}
    slow = SlowSource(f"{root}/in.zarr/raw", 0, gate=f"{root}/gate")
    results = race(
        lambda: downsample_flow(slow, 2, output, order=1, anti_aliasing=True, **common),
        lambda: downsample_flow(f"{root}/in.zarr/raw", 2, output, order=0, **common),
        output,
        slow.gate,
    )
    assert isinstance(results["b"], LeaseHeldError), results["b"]
    message = str(results["b"])
    assert "flow run" in message and os.uname().nodename in message and "started" in message
    np.testing.assert_array_equal(results["a"][:], resized(image, 1, True))
    b = downsample_flow(f"{root}/in.zarr/raw", 2, output, order=0, **common)
    np.testing.assert_array_equal(b[:], resized(image, 0))
    a = downsample_flow(f"{root}/in.zarr/raw", 2, output, order=1, anti_aliasing=True, **common)
    np.testing.assert_array_equal(a[:], resized(image, 1, True))


def test_same_computation_joins_a_live_lease(volume):
    root, image = volume
    output = f"{root}/out.zarr/s1"
    slow = SlowSource(f"{root}/in.zarr/raw", 0, gate=f"{root}/gate")
    results = race(
        lambda: downsample_flow(slow, 2, output, order=0, block_shape=BLOCK),
        lambda: downsample_flow(f"{root}/in.zarr/raw", 2, output, order=0, block_shape=BLOCK),
        output,
        slow.gate,
    )
    for name in "ab":
        np.testing.assert_array_equal(results[name][:], resized(image, 0))


def test_lease_of_a_dead_run_on_another_host_expires(volume):
    """A holder elsewhere stops renewing (its node died): refused until its ttl is over."""
    root, image = volume
    output = f"{root}/out.zarr/s1"
    copy_flow(image, output, block_shape=(16, 16, 16))
    ghost = Holder(
        "0b2c6f7e-run-on-node-7", host="node-7", pid=1, started="2026-12-01T03:00:00+00:00"
    )
    # a ttl far longer than a flow call's start-up (seconds on a loaded machine): refused for sure
    _acquire(output, "another computation", ghost, "node-7:1:x", ttl=120.0)
    with pytest.raises(
        LeaseHeldError,
        match=r"flow run 0b2c6f7e-run-on-node-7 on host node-7 \(pid 1\), started 2026-12-01T03:00",
    ):
        copy_flow(image[::-1].copy(), output, block_shape=(16, 16, 16))
    np.testing.assert_array_equal(zarr.open_array(output)[:], image)  # nothing written
    _acquire(
        output, "another computation", ghost, "node-7:1:x", ttl=0.5
    )  # its last renewal, then the node died
    time.sleep(0.6)
    result = copy_flow(image[::-1].copy(), output, block_shape=(16, 16, 16))
    np.testing.assert_array_equal(result[:], image[::-1])


def test_lease_is_renewed_while_its_run_lives(tmp_path):
    holder = Holder("run-1")
    with output_lease([str(tmp_path)], "A", holder, ttl=0.4):
        time.sleep(1.0)  # more than twice the ttl
        assert holders(str(tmp_path)) == ("A", [holder])
        with pytest.raises(LeaseHeldError, match="flow run run-1"):
            with output_lease([str(tmp_path)], "B", ttl=0.4):
                pass
        with output_lease([str(tmp_path)], "A", Holder("run-2"), ttl=0.4):
            assert len(holders(str(tmp_path))[1]) == 2
    assert holders(str(tmp_path)) == (None, [])


def _mark(directory: str, first: int, count: int) -> None:
    records = BlockRecords(directory)
    for block_id in range(first, first + count):
        records.mark_done(block_id, f"sig{block_id}")


def test_records_under_concurrent_writers(tmp_path):
    """Threads and processes append at once; a torn line (a killed writer) is ignored; forgotten
    blocks stay forgotten until recorded again."""
    import multiprocessing

    directory = str(tmp_path / "records")
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_mark, args=(directory, 5000 * i, 3000)) for i in range(3)]
    threads = [
        threading.Thread(target=_mark, args=(directory, 20000 + 5000 * i, 3000)) for i in range(3)
    ]
    for worker in processes + threads:
        worker.start()
    for worker in processes + threads:
        worker.join()
    records = BlockRecords(directory)
    firsts = [5000 * i for i in range(3)] + [20000 + 5000 * i for i in range(3)]
    expected = {b for first in firsts for b in range(first, first + 3000)}
    assert records.done() == expected
    assert records.recorded([7, 5001]) == {7: "sig7", 5001: "sig5001"}
    from bioimage_tasks.records import _line

    with open(
        os.path.join(directory, "000000", "node-9-77-deadbeef.log"), "w"
    ) as stream:  # a killed writer
        stream.write(
            "# node-9:77\n"
            + _line(4001, 1, "s")
            + _line(4002, 1, "s").replace(" s ", " t ")
            + _line(4000, 1, "s")[:-9]
        )
    assert records.done_among([4000, 4001, 4002]) == {4001}
    assert records.executors()[4001] == "node-9:77"
    records.forget([7, 8])
    assert records.done_among([7, 8, 9, 10], {10: "sig10"}) == {10}
    records.mark_done(8, "again")
    assert records.done_among([7, 8, 9], {8: "again"}) == {8}
    assert records.done_among(range(6, 12)) == {6, 8, 9, 10, 11}


def test_a_pyramid_lease_on_its_group_covers_its_levels(tmp_path):
    """A pyramid's lease file is on its group only, yet a writer of one of its levels and a
    writer of the whole pyramid still refuse each other; the same computation joins."""
    group = str(tmp_path / "image.zarr")
    level = f"{group}/s1"
    places = [group, f"{group}/s0", level]
    with output_lease(places, "P", Holder("run-p"), ttl=5.0):
        assert holders(group) == ("P", [Holder("run-p")])
        assert not os.path.exists(f"{level}/.bioimage-tasks")  # no lease file per level
        with pytest.raises(LeaseHeldError, match="flow run run-p"):
            with output_lease([level], "D", ttl=5.0):
                pass
        with output_lease([level], "P", Holder("run-p2"), ttl=5.0):
            assert len(holders(group)[1]) == 1 and holders(level)[0] == "P"
    with output_lease([level], "D", Holder("run-d"), ttl=5.0):
        with pytest.raises(LeaseHeldError, match="flow run run-d"):
            with output_lease(places, "P", ttl=5.0):
                pass
        assert holders(group) == (None, [])  # the refused pyramid removed its file
    assert holders(group) == (None, []) and holders(level) == (None, [])


def test_a_level_claimed_alone_is_claimed_back_with_a_new_epoch(tmp_path):
    """A pyramid's owner file is on its group only; a level claimed by another computation since
    makes the pyramid's epoch (its run keys) new when the pyramid claims it back."""
    group = str(tmp_path / "image.zarr")
    level = f"{group}/s1"
    places = [group, f"{group}/s0", level]
    first = claim_ownership(places, "P")
    assert owned_epoch(places, "P") == first == claim_ownership(places, "P")
    assert not os.path.exists(f"{level}/.bioimage-tasks/owner.json")
    os.makedirs(f"{level}/.bioimage-tasks/blocks/old")
    alone = claim_ownership([level], "D")  # the level written alone
    assert owned_epoch(places, "P") is None and owned_epoch([level], "D") == alone
    assert not os.path.exists(f"{level}/.bioimage-tasks/blocks/old")
    again = claim_ownership(places, "P")
    assert again != first and owned_epoch(places, "P") == again
    assert owned_epoch([level], "D") is None  # D's records stop counting
    assert claim_ownership([level], "D") != alone


def test_a_level_rewritten_alone_is_rewritten_by_its_pyramid(volume):
    """Plain API: a pyramid, then a copy into one of its levels, then the pyramid again: the
    rerun rewrites that level (it does not trust its records), a second rerun writes nothing."""
    root, image = volume
    group = f"{root}/image.zarr"
    call = {"scale_factors": [2], "chunks": (8, 8, 8)}
    pyramid(f"{root}/in.zarr/raw", group, **call)
    expected = window_mean(image)
    np.testing.assert_array_equal(zarr.open_array(f"{group}/s1")[:], expected)
    copy(np.zeros(OUT_SHAPE, np.uint8), f"{group}/s1", block_shape=BLOCK)
    assert not zarr.open_array(f"{group}/s1")[:].any()
    pyramid(f"{root}/in.zarr/raw", group, **call)
    np.testing.assert_array_equal(zarr.open_array(f"{group}/s1")[:], expected)
    before = {
        p: os.stat(os.path.join(group, "s1", "c", *p.split("/"))).st_mtime_ns
        for p in ["0/0/0", "2/2/2"]
    }
    pyramid(f"{root}/in.zarr/raw", group, **call)
    after = {
        p: os.stat(os.path.join(group, "s1", "c", *p.split("/"))).st_mtime_ns
        for p in ["0/0/0", "2/2/2"]
    }
    assert after == before


def test_a_lease_due_sooner_wakes_the_renewer(tmp_path):
    """The renewer sleeps until its first renewal due; a later lease that must be renewed sooner
    (a shorter ttl) wakes it, one that is due later does not need to."""
    long, short, later = Holder("run-long"), Holder("run-short"), Holder("run-later")
    a, b, c = (str(tmp_path / f"{name}.zarr") for name in "abc")
    with output_lease([a], "A", long, ttl=60.0):
        time.sleep(0.2)  # the renewer now sleeps until the long lease's renewal
        with output_lease([b], "B", short, ttl=0.4), output_lease([c], "C", later, ttl=0.6):
            time.sleep(1.5)  # past three times the short ttl
            assert holders(b) == ("B", [short]) and holders(c) == ("C", [later])
    assert [holders(p) for p in (a, b, c)] == [(None, [])] * 3


def test_one_thread_renews_every_lease_of_a_process(tmp_path):
    """Leases held at once are all renewed (past twice their ttl) by one thread, not one each."""
    first, second = Holder("run-a"), Holder("run-b")
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    with output_lease([a], "A", first, ttl=0.4), output_lease([b], "B", second, ttl=0.4):
        time.sleep(1.0)
        assert holders(a) == ("A", [first]) and holders(b) == ("B", [second])
        names = [thread.name for thread in threading.enumerate()]
        assert names.count("bioimage-tasks-lease") == 1
    assert holders(a) == (None, []) and holders(b) == (None, [])
