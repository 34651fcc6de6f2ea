"""Input signatures on every file layout: a block's signature changes exactly when a storage file
its region covers is written, rewritten or deleted, and nowhere else."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tensorstore as ts
import zarr

from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.io import as_source
from bioimage_tasks.signatures import grid_intervals, interval_signatures

LAYOUTS = {
    "v3 default": dict(zarr_format=3),
    "v3 dot keys": dict(zarr_format=3, chunk_key_encoding={"name": "v2", "separator": "."}),
    "v3 sharded": dict(zarr_format=3, shards="twice"),
    "v2 dot": dict(zarr_format=2),
    "v2 slash": dict(zarr_format=2, chunk_key_encoding={"name": "v2", "separator": "/"}),
}


def make_array(root: str, layout: str, shape: tuple[int, ...], chunks: tuple[int, ...]) -> str:
    """A zarr array at `root/a.zarr/x` with the first chunk (or shard) written, the rest missing."""
    options = dict(LAYOUTS[layout])
    if options.get("shards") == "twice":
        options["shards"] = tuple(2 * c for c in chunks)
    array = zarr.create_array(
        store=os.path.join(root, "a.zarr"),
        name="x",
        shape=shape,
        dtype="uint16",
        chunks=chunks,
        fill_value=0,
        **options,
    )
    array[tuple(slice(0, 1) for _ in shape)] = 1
    return os.path.join(root, "a.zarr", "x")


def signatures(path: str, block_shape: tuple[int, ...]) -> list[str]:
    source = as_source(path)
    grid = BlockGrid(source.shape, block_shape)
    starts, stops = grid_intervals(source.shape, block_shape, list(range(grid.n_blocks)))
    return interval_signatures(source, starts, stops)


def changed(before: list[str], after: list[str]) -> set[int]:
    return {i for i, (a, b) in enumerate(zip(before, after)) if a != b}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "shape, chunks, block",
    [((37, 20, 18), (8, 8, 8), (16, 8, 16)), ((50,), (8,), (16,)), ((21, 30), (8, 8), (8, 16))],
)
def test_signature_follows_written_files(tmp_path, layout, shape, chunks, block):
    path = make_array(str(tmp_path), layout, shape, chunks)
    array = zarr.open_array(path, mode="r+")
    before = signatures(path, block)
    assert before == signatures(path, block) and None not in before
    grid = BlockGrid(shape, block)
    corner = tuple(s - 1 for s in shape)  # the last voxel: a file not written yet
    time.sleep(0.01)
    array[tuple(slice(c, c + 1) for c in corner)] = 7
    last_block = int(
        np.ravel_multi_index(tuple(c // b for c, b in zip(corner, block)), grid.grid_shape)
    )
    after = signatures(path, block)
    unit = array.shards or array.chunks
    file_low = [c // u * u for c, u in zip(corner, unit)]  # the storage file now written
    file_high = [low + u for low, u in zip(file_low, unit)]
    touched = {
        i
        for i, (low, high) in enumerate(zip(*grid_intervals(shape, block, range(grid.n_blocks))))
        if all(a < fh and b > fl for a, b, fl, fh in zip(low, high, file_low, file_high))
    }
    assert last_block in changed(before, after) and changed(before, after) == touched
    first = signatures(path, block)
    array[tuple(slice(0, 1) for _ in shape)] = 3  # rewrite the first file
    assert 0 in changed(first, signatures(path, block))


def test_signature_of_n5_follows_written_files(tmp_path):
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(tmp_path / "a.n5")},
        "path": "x",
        "metadata": {
            "dimensions": [20, 24, 16],
            "blockSize": [8, 8, 8],
            "dataType": "uint8",
            "compression": {"type": "gzip"},
        },
    }
    store = ts.open(spec, create=True).result()
    path = str(tmp_path / "a.n5" / "x")
    before = signatures(path, (8, 8, 8))
    store[16:20, 16:24, 8:16].write(np.ones((4, 8, 8), np.uint8)).result()
    assert changed(before, signatures(path, (8, 8, 8))) == {
        int(np.ravel_multi_index((2, 2, 1), (3, 3, 2)))
    }


def test_an_empty_batch_has_no_signatures(tmp_path):
    """A batch of no blocks (more workers than blocks) gets an empty list, not a numpy error."""
    source = as_source(make_array(str(tmp_path), "v3 default", (16, 16), (8, 8)))
    empty = np.zeros((0, 2), np.int64)
    assert interval_signatures(source, empty, empty) == []
    assert len(signatures(str(tmp_path / "a.zarr" / "x"), (8, 8))) == 4
