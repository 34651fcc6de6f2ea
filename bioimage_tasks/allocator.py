"""Keep large block buffers in the C heap between blocks. glibc serves allocations above its
mmap threshold (at most 32 MiB) with fresh mappings and unmaps them on free, so every tile read,
kernel temporary and write buffer of 32 MiB or more costs its page faults again, block after block:
measured on a 1024^3 uint32 pyramid, 2.2 s of system time in the reads alone, about a third of
their cost (benchmarks/README.md). Raising the threshold above the largest buffer a block uses
lets freed buffers be reused. Set once per worker process, before its first block."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

MMAP_THRESHOLD = 128 * 2**20  # above a pyramid tile of 2**23 voxels of uint64 (64 MiB)
TRIM_THRESHOLD = 256 * 2**20  # free memory at the top of the heap beyond this goes back to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_block_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); False where the C library
    is not glibc (nothing is changed)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
