"""Our runs' events, read back through the real Prefect events API: completed, failed and
blocks-failed, with the output array as the resource and the flow run as a related resource."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from helpers import wait_for

from bioimage_tasks import BlockGrid
from bioimage_tasks.prefect.events import (
    BLOCKS_FAILED,
    RUN_COMPLETED,
    RUN_FAILED,
    output_resource_id,
)
from bioimage_tasks.runners import RunnerConfig
from flows import copy_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
SHAPE = (24, 24, 16)


class BrokenBlocks:
    """A numpy-backed source whose chosen blocks always fail to read."""

    def __init__(self, array: np.ndarray, broken_starts: set[tuple[int, ...]]):
        self.array, self.broken_starts = array, broken_starts

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    write_unit = None

    def fingerprint(self) -> dict:
        return {"broken": sorted(self.broken_starts)}

    def __getitem__(self, key):
        if tuple(k.start for k in key) in self.broken_starts:
            raise OSError(f"injected read failure at {tuple(k.start for k in key)}")
        return self.array[key]


def read_events(resource_id: str, flow_run_id) -> list:
    """Our events about `resource_id` emitted by flow run `flow_run_id`, oldest first."""
    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    with get_client(sync_client=True) as client:
        page = client.read_events(
            limit=50,
            filter=EventFilter(
                event=EventNameFilter(prefix=["bioimage-tasks."]),
                resource=EventResourceFilter(id=[resource_id]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            ),
        )
    return sorted(page.events, key=lambda e: e.occurred)


def test_failed_and_completed_runs_emit_events_about_their_output(tmp_path):
    image = np.random.default_rng(3).integers(0, 255, SHAPE, dtype=np.uint8)
    grid = BlockGrid(SHAPE, (8, 8, 8))
    broken_ids = [1, 7, 12]
    source = BrokenBlocks(image, {tuple(s.start for s in grid.block_slices(b)) for b in broken_ids})
    output = f"{tmp_path}/out.zarr/raw"
    state = copy_flow(
        source,
        output,
        block_shape=(8, 8, 8),
        num_workers=2,
        job_config=RunnerConfig(retries=0),
        return_state=True,
    )
    assert state.is_failed()
    failed_run = state.state_details.flow_run_id
    resource_id = output_resource_id(output)
    assert resource_id == f"bioimage-tasks.array.{os.path.abspath(output)}"

    events = wait_for(
        lambda: (found := read_events(resource_id, failed_run)) and len(found) == 2 and found, 60, 1
    )
    blocks, failed = sorted(events, key=lambda e: e.event)
    assert (blocks.event, failed.event) == (BLOCKS_FAILED, RUN_FAILED)
    assert blocks.payload["block_ids"] == broken_ids
    assert blocks.payload["failed"] == 3 and blocks.payload["blocks"] == grid.n_blocks
    assert set(blocks.payload["first_errors"]) == {str(b) for b in broken_ids}
    assert "injected read failure" in blocks.payload["first_errors"]["7"]
    assert (
        blocks.payload["output_path"] == os.path.abspath(output)
        and blocks.payload["kind"] == "copy"
    )
    records = os.listdir(os.path.join(output, ".bioimage-tasks", "blocks"))
    assert [blocks.payload["run_key"]] == records
    assert blocks.resource["bioimage-tasks.run-key"] == records[0]
    assert blocks.resource["prefect.resource.name"].endswith("out.zarr/raw")
    assert blocks.resource["bioimage-tasks.failures-in-a-row"] == "1"
    assert "BlocksFailedError" in failed.payload["error"] and failed.payload["failed"] == 3
    roles = {r.role: r.id for r in blocks.related}
    assert roles["flow-run"] == f"prefect.flow-run.{failed_run}" and roles["flow"].startswith(
        "prefect.flow."
    )

    # the same failure again counts as the second in a row; the repaired run completes
    again = copy_flow(
        source, output, block_shape=(8, 8, 8), job_config=RunnerConfig(retries=0), return_state=True
    )
    second = wait_for(lambda: read_events(resource_id, again.state_details.flow_run_id), 60, 1)
    assert {e.resource["bioimage-tasks.failures-in-a-row"] for e in second} == {"2"}
    assert next(e for e in second if e.event == BLOCKS_FAILED).payload["block_ids"] == broken_ids
    source.broken_starts = set()
    done = copy_flow(source, output, block_shape=(8, 8, 8), block_ids=broken_ids, return_state=True)
    np.testing.assert_array_equal(zarr.open_array(output)[:], image)
    (completed,) = wait_for(lambda: read_events(resource_id, done.state_details.flow_run_id), 60, 1)
    assert completed.event == RUN_COMPLETED and completed.payload["written"] == 3
    assert completed.resource["bioimage-tasks.failures-in-a-row"] == "0"
