"""Volumes, sharding and references shared by the precomputed tests: small image and label
volumes, a sharding spec with one shard for the whole test volume, tensorstore's downsample."""

from __future__ import annotations

import numpy as np
import tensorstore as ts

# cloud-volume uploads one shard per write: one shard holds the whole test volume
SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 3,
    "minishard_bits": 2,
    "shard_bits": 0,
    "hash": "identity",
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def downsampled(base: np.ndarray, factors: tuple[int, ...], method: str) -> np.ndarray:
    return ts.downsample(ts.array(base), list(factors), method).read().result()


def image(rng, shape=(20, 50, 40)) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


def labels(rng, shape=(20, 50, 40)) -> np.ndarray:
    return (rng.integers(0, 4, shape) * 1000 + 7).astype(np.uint32)
