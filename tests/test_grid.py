"""Block grids own whole chunks: no two blocks ever write the same chunk or shard."""

from __future__ import annotations

import itertools

import pytest

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.grid import BlockGrid, check_block_shape, default_block_shape


def chunks_touched(region, chunks):
    ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(region, chunks)]
    return set(itertools.product(*ranges))


@pytest.mark.parametrize(
    "shape,unit",
    [
        ((100, 37, 255), (16, 8, 32)),
        ((5, 7), (2, 3)),
        ((257, 255), (64, 64)),
        ((1000, 10, 10), (1, 10, 10)),
        ((33, 33, 33), (33, 33, 33)),
        ((70, 70, 70), (12, 12, 12)),
    ],
)
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


def test_blocks_sharing_a_write_unit_share_a_group():
    grid, unit = BlockGrid((100, 100), (10, 16)), (4, 48)
    assert check_block_shape((10, 16), (100, 100)) == (10, 16)
    assert grid.shares_write_units(unit) and not BlockGrid((100, 100), (8, 48)).shares_write_units(
        unit
    )

    def units(block_id):
        box = grid.block_slices(block_id)
        return {
            (a, b)
            for a in range(box[0].start // 4, (box[0].stop - 1) // 4 + 1)
            for b in range(box[1].start // 48, (box[1].stop - 1) // 48 + 1)
        }

    for a in range(grid.n_blocks):
        for b in range(grid.n_blocks):
            if units(a) & units(b):
                assert grid.write_group(a, unit) == grid.write_group(b, unit)
    # lcm(10, 4) = 20 and lcm(16, 48) = 48: groups of 2 x 3 blocks, 5 x 3 groups
    assert len({grid.write_group(b, unit) for b in range(grid.n_blocks)}) == 5 * 3


def test_downscale_shape_is_ceil_mode():
    assert downscale_shape((37, 41, 23), (3, 2, 1)) == (13, 21, 23)
