"""I/O throttling with a real Prefect global concurrency limit on a real Dask LocalCluster: the
number of blocks writing at once never exceeds the limit, and a block waiting for a write slot
does not stop reads of other blocks (measured from timestamps the reads and writes record)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import TimedReads, TimedWrites, logged_intervals, max_overlap, zarr_input

from bioimage_tasks.runners import LocalClusterConfig
from bioimage_tasks.throttle import ThrottledSink, throttle_writes
from flows import copy_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
SHAPE, BLOCK = (64, 32, 32), (8, 16, 16)  # 32 blocks
READ_DELAY, WRITE_DELAY = 0.05, 0.15


def create_limit(name: str, limit: int) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


def read_ahead(reads, writes) -> list[int]:
    """For each write: how many blocks beyond it its worker had already read when the write got
    its slot. Reads of a worker happen in block order, one at a time, so that is the number of
    its reads started by then minus the position of this block's own read, minus one."""
    order = {}
    for start, _, pid, corner in reads:
        order.setdefault(pid, []).append((start, corner))
    ahead = []
    for write_start, _, pid, corner in writes:
        sequence = order[pid]
        position = [c for _, c in sequence].index(corner)
        ahead.append(sum(1 for s, _ in sequence if s < write_start) - position - 1)
    return ahead


def run_copy(tmp_path, name: str, limit: str | None, workers: int = 2):
    image = np.random.default_rng(1).integers(0, 255, SHAPE, dtype=np.uint8)
    zarr_input(tmp_path, image, BLOCK, container=f"{name}.zarr")
    zarr.create_array(
        store=str(tmp_path / f"{name}.zarr"), name="copy", shape=SHAPE, dtype="uint8", chunks=BLOCK
    )
    logs = tmp_path / f"{name}-log"
    logs.mkdir()
    source = TimedReads(f"{tmp_path}/{name}.zarr/raw", READ_DELAY, str(logs))
    sink = TimedWrites(f"{tmp_path}/{name}.zarr/copy", WRITE_DELAY, str(logs))
    copy_flow(
        source,
        sink,
        block_shape=BLOCK,
        job_type="subprocess",
        num_workers=workers,
        job_config=LocalClusterConfig(write_limit=limit, worker_timeout=120, blocks_per_task=8),
    )
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / f"{name}.zarr"), path="copy")[:], image
    )
    return logged_intervals(str(logs), "read"), logged_intervals(str(logs), "write")


@pytest.mark.slow
def test_write_limit_caps_concurrent_writers_across_workers_without_stalling_reads(tmp_path):
    reads, writes = run_copy(tmp_path, "free", None)
    assert (
        max_overlap(writes) == 2
    )  # without a limit both workers write at once (the test can see it)

    create_limit("test-block-writes", 1)
    reads, writes = run_copy(tmp_path, "capped", "test-block-writes")
    assert len(writes) == 32 and max_overlap(writes) == 1
    ahead = read_ahead(reads, writes)
    span = max(e for _, e, *_ in writes) - min(s for s, *_ in reads)
    busy = sum(e - s for s, e, *_ in writes)
    print(
        f"\nwrite_limit=1, 2 workers, 32 blocks ({READ_DELAY} s reads, {WRITE_DELAY} s writes): "
        f"{span:.2f} s from first read to last write, the slot busy {busy:.2f} s "
        f"({busy / span:.0%}); when a write got its slot "
        f"its worker had read {sum(a >= 2 for a in ahead)}/32 times 2 blocks beyond it, "
        f"{sum(a == 1 for a in ahead)} times 1, {sum(a <= 0 for a in ahead)} times 0"
    )
    # A wait for the slot does not stop the batch: while block i waits, its worker computes
    # block i+1 and reads block i+2 (a batch that blocked in the wait could be 1 block ahead at
    # most).
    assert sum(a >= 2 for a in ahead) >= 8


def test_a_missing_limit_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="prefect gcl create no-such-limit"):
        throttle_writes(object(), "no-such-limit")
    assert throttle_writes("sink", None) == "sink"


def test_throttled_sink_keeps_the_sink_interface(tmp_path):
    import pickle

    from bioimage_tasks.io import as_source

    create_limit("test-interface", 2)
    array = zarr.create_array(
        store=str(tmp_path / "o.zarr"), name="a", shape=(8, 8), dtype="uint8", chunks=(4, 4)
    )
    sink = throttle_writes(as_source(array), "test-interface")
    assert isinstance(sink, ThrottledSink) and sink.shape == (8, 8) and sink.write_unit == (4, 4)
    sink.start_write((slice(0, 4), slice(0, 8)), np.full((4, 8), 7, np.uint8))()
    sink.write((slice(4, 8), slice(0, 8)), np.full((4, 8), 9, np.uint8))
    assert sink[(slice(3, 5), slice(0, 1))].ravel().tolist() == [7, 9]
    assert sink.directory == as_source(array).directory
    again = pickle.loads(pickle.dumps(sink))
    assert again.limit == "test-interface" and again.fingerprint() == sink.fingerprint()
