"""The output block grid: which region each block id covers, and chunk-safe block shapes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.errors import ParameterError

# A block should hold about this many voxels when we are free to choose: big enough that
# per-block overhead (halo reads, Python calls) is small, small enough to stay cache-friendly.
TARGET_BLOCK_VOXELS = 64**3


@dataclass(frozen=True)
class BlockGrid:
    """A C-ordered grid of `block_shape` blocks over `shape`; edge blocks are cropped.

    >>> grid = BlockGrid((5, 7), (2, 4))
    >>> grid.grid_shape, grid.n_blocks
    ((3, 2), 6)
    >>> grid.block_slices(5)
    (slice(4, 5, None), slice(4, 7, None))
    """

    shape: tuple[int, ...]
    block_shape: tuple[int, ...]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block_shape))

    @property
    def n_blocks(self) -> int:
        return math.prod(self.grid_shape)

    def block_slices(self, block_id: int) -> tuple[slice, ...]:
        """The region of block `block_id` (C order over the grid)."""
        position, rest = [], int(block_id)  # np.unravel_index in plain Python: ~10x faster
        for extent in reversed(self.grid_shape):
            rest, index = divmod(rest, extent)
            position.append(index)
        if rest:
            raise ValueError(f"block id {block_id} is outside a grid of {self.n_blocks} blocks")
        return tuple(
            slice(p * b, min((p + 1) * b, s))
            for p, b, s in zip(reversed(position), self.block_shape, self.shape)
        )

    def write_group(self, block_id: int, write_unit: Sequence[int] | None) -> tuple[int, ...]:
        """Which group of blocks block `block_id` belongs to, where blocks of one group share
        write units (chunks or shards) and blocks of different groups never do: along each axis,
        block and unit boundaries meet every lcm(block, unit) voxels.

        >>> grid = BlockGrid((100,), (16,))
        >>> [grid.write_group(b, (64,)) for b in range(7)]
        [(0,), (0,), (0,), (0,), (1,), (1,), (1,)]
        """
        position = np.unravel_index(block_id, self.grid_shape)
        if write_unit is None:
            return tuple(int(p) for p in position)
        return tuple(
            int(p) * b // math.lcm(b, u) for p, b, u in zip(position, self.block_shape, write_unit)
        )

    def shares_write_units(self, write_unit: Sequence[int] | None) -> bool:
        """Whether some blocks share a chunk or shard (block shape not a multiple of it)."""
        return write_unit is not None and any(
            b % u and b < s for b, u, s in zip(self.block_shape, write_unit, self.shape)
        )

    def validate_block_ids(self, block_ids: Iterable[int]) -> list[int]:
        """Sorted block ids, or a ParameterError naming `block_ids`: an empty list (a run that
        would write nothing), non-integers, ids outside the grid and repeated ids are refused."""
        if isinstance(block_ids, (str, bytes)) or not isinstance(block_ids, Iterable):
            raise ParameterError(f"block_ids must be a sequence of integers, got {block_ids!r}")
        ids = []
        for block_id in block_ids:
            if not isinstance(block_id, (int, np.integer)) or isinstance(block_id, bool):
                raise ParameterError(f"block_ids must be integers, got {block_id!r}")
            if not 0 <= block_id < self.n_blocks:
                raise ParameterError(
                    f"block_ids must lie in [0, {self.n_blocks}) for a grid of {self.grid_shape} "
                    f"blocks of shape {self.block_shape}; got {block_id}"
                )
            ids.append(int(block_id))
        if not ids:
            raise ParameterError("block_ids is empty: give at least one block id, or None for all")
        repeated = sorted(b for b, n in Counter(ids).items() if n > 1)
        if repeated:
            raise ParameterError(f"block_ids must not repeat ids; repeated: {repeated}")
        return sorted(ids)


def default_block_shape(shape: Sequence[int], write_unit: Sequence[int] | None) -> tuple[int, ...]:
    """A block shape that is a multiple of `write_unit` (chunk or shard) and holds about
    TARGET_BLOCK_VOXELS: axes are doubled in turn, last (fastest) axis first, never past `shape`.

    >>> default_block_shape((512, 512, 512), (32, 32, 32))
    (64, 64, 64)
    >>> default_block_shape((10, 1000), None)
    (10, 1000)
    """
    unit = write_unit if write_unit is not None else (1,) * len(shape)
    block = [min(u, s) for u, s in zip(unit, shape)]
    while math.prod(block) < TARGET_BLOCK_VOXELS and block != list(shape):
        for axis in reversed(range(len(shape))):
            if math.prod(block) < TARGET_BLOCK_VOXELS:
                block[axis] = min(block[axis] * 2, shape[axis])
    return tuple(block)


def chunks_dividing(block_shape: Sequence[int], preferred: Sequence[int]) -> tuple[int, ...]:
    """Per axis, the largest chunk size <= `preferred` that divides `block_shape`: chunks for a new
    output that blocks of `block_shape` own whole.

    >>> chunks_dividing((8, 512, 100), (64, 64, 64))
    (8, 64, 50)
    """
    return tuple(
        max(d for d in range(1, min(b, p) + 1) if b % d == 0)
        for b, p in zip(block_shape, preferred)
    )


def check_block_shape(block_shape: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """Validate an explicit `block_shape`: positive ints, one per axis. Blocks need not be
    multiples of the output's chunks or shards: blocks that share one run in one task, in turn."""
    block = tuple(block_shape)
    if len(block) != len(shape) or any(
        not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1 for b in block
    ):
        raise ParameterError(
            f"block_shape must be {len(shape)} positive integers, got {block_shape!r}"
        )
    return tuple(int(b) for b in block)


def fit_to_budget(
    block: Sequence[int],
    write_unit: Sequence[int] | None,
    shape: Sequence[int],
    working_set: Callable[[tuple[int, ...]], int],
    budget: int,
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(block shape, piece shape) whose `working_set` fits `budget`: a block shrinks by halving
    its largest axis, down to one write unit; a write unit that still needs more is computed in
    pieces (halved the same way) by the one task that owns it. Piece shape None: whole blocks.

    >>> fit_to_budget((256, 256), (64, 64), (512, 512), lambda b: b[0] * b[1], 64 * 64)
    ((64, 64), None)
    >>> fit_to_budget((64, 64), (64, 64), (512, 512), lambda b: b[0] * b[1], 100)
    ((64, 64), (8, 8))
    """
    block = list(block)
    floor = (
        [min(u, s) for u, s in zip(write_unit, shape)]
        if write_unit is not None
        else [1] * len(shape)
    )
    while working_set(tuple(block)) > budget:
        axis = max(range(len(block)), key=lambda a: (block[a] // floor[a] > 1, block[a]))
        if block[axis] // floor[axis] <= 1:
            break
        block[axis] = max(floor[axis], (block[axis] // floor[axis] // 2) * floor[axis])
    if working_set(tuple(block)) <= budget:
        return tuple(block), None
    piece = list(block)
    while working_set(tuple(piece)) > budget and max(piece) > 1:
        axis = max(range(len(piece)), key=lambda a: piece[a])
        piece[axis] = math.ceil(piece[axis] / 2)
    return tuple(block), tuple(piece)
