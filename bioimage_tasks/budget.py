"""How much memory a block needs: the estimate behind `RunnerConfig.memory_budget`. A lazy
view (`WindowedSource`, `ResizedSource`) knows what its regions read and what its kernel holds
(`working_set`); any other source is read and written as it is."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bioimage_tasks.io import Source


def block_bytes(source: Source, shape: Sequence[int]) -> int:
    """Bytes a worker holds for one block of `shape` (output space) of `source`: the block's
    input, the kernel's temporaries and the result, twice over, since the next block's read and
    the previous block's write overlap its computation."""
    estimate = getattr(source, "working_set", None)
    one = (
        estimate(tuple(shape))
        if estimate is not None
        else 2 * math.prod(shape) * source.dtype.itemsize
    )
    return 2 * one
