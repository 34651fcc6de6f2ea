"""Which files of a precomputed scale hold a region: unsharded chunk files named by their voxel
ranges (`x0-x1_y0-y1_z0-z1`), or the shard files (`<hex>.shard`) that the sharded format's
compressed Morton code (hashed or not) assigns each chunk to; and stamps of those files for block
signatures, and the sharding spec a pyramid derives from a shard shape."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.kv import KvLocation
from bioimage_tasks.io.murmur import murmurhash3_x86_128_low64


def grid_bits(grid: Sequence[int]) -> list[int]:
    """Bits of each axis's chunk index in the compressed Morton code."""
    return [max(0, math.ceil(math.log2(n))) if n > 1 else 0 for n in grid]


def morton_code(cell: Sequence[int], bits: Sequence[int]) -> int:
    """The compressed Morton code of a chunk (x, y, z), as neuroglancer's sharded format has it.

    >>> morton_code((1, 0, 1), (1, 1, 1)), morton_code((3, 1, 0), (2, 1, 0))
    (5, 7)
    """
    code, out = 0, 0
    for bit in range(max(bits, default=0)):
        for axis, n in enumerate(bits):
            if bit < n:
                code |= ((cell[axis] >> bit) & 1) << out
                out += 1
    return code


def shard_spec(grid: Sequence[int], ratio: Sequence[int], parameter: str = "shards") -> dict:
    """A sharding spec (identity hash) whose shards hold `ratio` chunks per axis (x, y, z; powers
    of two, capped at the grid): the low bits of the Morton code that stay within a shard must be
    exactly `log2(ratio)` of each axis. ParameterError naming `parameter` otherwise.

    >>> spec = shard_spec((8, 8, 8), (2, 2, 2))
    >>> spec["preshift_bits"], spec["minishard_bits"], spec["shard_bits"]
    (3, 0, 6)
    """
    if any(r < 1 or r & (r - 1) for r in ratio):
        raise ParameterError(
            f"{parameter}: a precomputed shard holds a power of two of chunks per axis, got "
            f"{tuple(ratio)} chunks"
        )
    bits = grid_bits(grid)
    wanted = [min(int(math.log2(r)), b) for r, b in zip(ratio, bits)]
    order = [axis for bit in range(max(bits, default=0)) for axis in range(3) if bit < bits[axis]]
    taken, low = [0, 0, 0], 0
    while taken != wanted:
        if low == len(order) or taken[order[low]] >= wanted[order[low]]:
            raise ParameterError(
                f"{parameter}: precomputed shards of {tuple(ratio)} chunks (x, y, z) are not "
                f"a run of the Morton code on a grid of {tuple(grid)} chunks: use as many "
                "chunks along every axis (e.g. 2, 2, 2 or 4, 4, 4)"
            )
        taken[order[low]] += 1
        low += 1
    preshift = min(low, 3)
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": preshift,
        "minishard_bits": low - preshift,
        "shard_bits": sum(bits) - low,
        "hash": "identity",
        "minishard_index_encoding": "gzip",
        "data_encoding": "raw",
    }


@dataclass(frozen=True)
class ScaleFiles:
    """A scale's chunk geometry (x, y, z) and sharding, enough to name its files."""

    size: tuple[int, ...]
    chunk: tuple[int, ...]
    offset: tuple[int, ...]
    sharding: dict | None

    @classmethod
    def of(cls, scale: dict) -> ScaleFiles:
        chunk = scale.get("chunk_size") or scale["chunk_sizes"][0]
        return cls(
            tuple(scale["size"]),
            tuple(chunk),
            tuple(scale.get("voxel_offset", (0, 0, 0))),
            scale.get("sharding"),
        )

    def cells(self, start: Sequence[int], stop: Sequence[int]) -> list[tuple[int, ...]]:
        """Chunk grid cells (x, y, z) of the box [start, stop) in (c,) z, y, x array order."""
        low, high = list(start[-3:])[::-1], list(stop[-3:])[::-1]
        ranges = [range(a // c, -(-b // c)) for a, b, c in zip(low, high, self.chunk)]
        return list(itertools.product(*ranges))

    def names(self, start: Sequence[int], stop: Sequence[int]) -> list[str]:
        """The files (relative to the scale's folder) that hold the box's chunks."""
        cells = self.cells(start, stop)
        if self.sharding is None:
            return [self.chunk_name(cell) for cell in cells]
        return self.shard_names(cells)

    def chunk_name(self, cell: Sequence[int]) -> str:
        bounds = []
        for i, c, o, n in zip(cell, self.chunk, self.offset, self.size):
            bounds.append(f"{o + i * c}-{o + min((i + 1) * c, n)}")
        return "_".join(bounds)

    def shard_names(self, cells: Sequence[Sequence[int]]) -> list[str]:
        """The shard files holding these chunk cells: each chunk id (its compressed Morton
        code) shifted right by `preshift_bits`, hashed (identity or murmurhash3_x86_128), then
        the shard number taken from above the minishard bits."""
        spec = self.sharding
        if spec["hash"] not in ("identity", "murmurhash3_x86_128"):
            raise NotImplementedError(spec["hash"])
        bits = grid_bits([-(-n // c) for n, c in zip(self.size, self.chunk)])
        codes = [morton_code(cell, bits) >> spec["preshift_bits"] for cell in cells]
        if spec["hash"] == "murmurhash3_x86_128":
            codes = [int(h) for h in murmurhash3_x86_128_low64(np.array(codes, np.uint64))]
        mask = (1 << spec["shard_bits"]) - 1
        shards = {(code >> spec["minishard_bits"]) & mask for code in codes}
        digits = -(-spec["shard_bits"] // 4)
        return sorted(f"{shard:0{digits}x}.shard" if digits else "0.shard" for shard in shards)

    def signature(
        self, where: str | KvLocation, start: Sequence[int], stop: Sequence[int]
    ) -> str | None:
        """A hash of the box's files' (name, size, mtime), or their ETags on object storage;
        None where files cannot be named (a hash other than identity or murmurhash)."""
        try:
            names = self.names(start, stop)
        except NotImplementedError:
            return None
        if isinstance(where, KvLocation):
            stamps = [repr(s) for s in where.stamps(names)]
        else:
            stamps = [_stat(os.path.join(where, name)) for name in names]
        digest = hashlib.blake2b(digest_size=8)
        for name, stamp in zip(names, stamps):
            digest.update(f"{name}:{stamp};".encode())
        return digest.hexdigest()


def _stat(path: str) -> str:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return "missing"
    return f"{status.st_size},{status.st_mtime_ns}"
