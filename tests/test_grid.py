"""Block grids own whole chunks: no two blocks ever write the same chunk or shard."""

from __future__ import annotations

import itertools

import pytest

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.grid import BlockGrid, check_block_shape, default_block_shape


def chunks_touched(region, chunks):
    ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(region, chunks)]
    return set(itertools.product(*ranges))


@pytest.mark.parametrize("shape,unit", [
    ((100, 37, 255), (16, 8, 32)), ((5, 7), (2, 3)), ((257, 255), (64, 64)),
    ((1000, 10, 10), (1, 10, 10)), ((33, 33, 33), (33, 33, 33)), ((70, 70, 70), (12, 12, 12)),
])
def test_default_blocks_never_share_a_chunk(shape, unit):
    grid = BlockGrid(shape, default_block_shape(shape, unit))
    owners = {}
    for block_id in range(grid.n_blocks):
        for chunk in chunks_touched(grid.block_slices(block_id), unit):
            assert owners.setdefault(chunk, block_id) == block_id, f"chunk {chunk} shared"
    covered = sum(len(chunks_touched(grid.block_slices(b), unit)) for b in range(grid.n_blocks))
    assert covered == len(owners)


def test_blocks_cover_the_shape_exactly_once():
    grid = BlockGrid((37, 41, 23), (5, 7, 4))
    voxels = sum(
        (s[0].stop - s[0].start) * (s[1].stop - s[1].start) * (s[2].stop - s[2].start)
        for s in map(grid.block_slices, range(grid.n_blocks))
    )
    assert voxels == 37 * 41 * 23
    assert grid.block_slices(grid.n_blocks - 1) == (slice(35, 37), slice(35, 41), slice(20, 23))


def test_unaligned_block_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"block_shape \(10, 16\) is not a multiple of .* \(4, 8\)"):
        check_block_shape((10, 16), (4, 8), (100, 100))
    assert check_block_shape((8, 100), (4, 8), (100, 100)) == (8, 100)  # a block spanning an axis is fine


def test_downscale_shape_is_ceil_mode():
    assert downscale_shape((37, 41, 23), (3, 2, 1)) == (13, 21, 23)
