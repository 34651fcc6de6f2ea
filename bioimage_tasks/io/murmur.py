"""MurmurHash3 x86_128 of 8-byte keys, vectorised with numpy: the hash neuroglancer's sharded
format (`"hash": "murmurhash3_x86_128"`) applies to a chunk id (its compressed Morton code,
shifted right by `preshift_bits`, as 8 little-endian bytes, seed 0), keeping the low 64 bits of
the 128-bit digest. No package here provides it (mmh3 is not a dependency); only the tail and
finalisation steps of the algorithm run for an 8-byte key."""

from __future__ import annotations

import numpy as np

C1, C2, C3, C4 = (np.uint32(c) for c in (0x239B961B, 0xAB0E9789, 0x38B34AE5, 0xA1E38B93))


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def murmurhash3_x86_128_low64(keys: np.ndarray | int) -> np.ndarray:
    """The low 64 bits of MurmurHash3_x86_128(seed 0) of each uint64 key's 8 bytes (as
    cloud-volume's `mmh3.hash64(key.tobytes(), x64arch=False)[0]`, unsigned).

    >>> [hex(int(h)) for h in murmurhash3_x86_128_low64(np.array([0, 1], np.uint64))]
    ['0x4772b084e028ae41', '0xe8bd67d616d4ce9a']
    """
    keys = np.atleast_1d(np.asarray(keys, dtype=np.uint64))
    k1 = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)  # bytes 0-3, little-endian
    k2 = (keys >> np.uint64(32)).astype(np.uint32)  # bytes 4-7
    zero = np.zeros_like(k1)
    h2 = zero ^ (_rotl(k2 * C2, 16) * C3)
    h1 = zero ^ (_rotl(k1 * C1, 15) * C2)
    length = np.uint32(8)
    h1, h2, h3, h4 = h1 ^ length, h2 ^ length, zero ^ length, zero ^ length
    h1 = h1 + h2 + h3 + h4
    h2, h3, h4 = h2 + h1, h3 + h1, h4 + h1
    h1, h2, h3, h4 = _fmix(h1), _fmix(h2), _fmix(h3), _fmix(h4)
    h1 = h1 + h2 + h3 + h4
    h2 = h2 + h1
    return h1.astype(np.uint64) | (h2.astype(np.uint64) << np.uint64(32))
