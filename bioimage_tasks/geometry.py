"""Shape arithmetic shared by every operation: scale factors and downscaled shapes."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from bioimage_tasks.errors import ParameterError


def normalize_factors(scale_factor: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Return one integer factor >= 1 per axis, or raise a ValueError naming `scale_factor`.

    >>> normalize_factors(2, 3)
    (2, 2, 2)
    >>> normalize_factors((1, 2, 2), 3)
    (1, 2, 2)
    """
    if isinstance(scale_factor, numbers.Integral) and not isinstance(scale_factor, bool):
        factors: tuple = (scale_factor,) * ndim
    elif isinstance(scale_factor, Sequence) and not isinstance(scale_factor, str):
        factors = tuple(scale_factor)
    else:
        raise ParameterError(
            f"scale_factor must be an int or a sequence of ints, got {scale_factor!r}"
        )
    if len(factors) != ndim:
        raise ParameterError(
            f"scale_factor must have one entry per input axis ({ndim}), got {len(factors)}: "
            f"{scale_factor!r}"
        )
    for factor in factors:
        if not isinstance(factor, numbers.Integral) or isinstance(factor, bool):
            raise ParameterError(
                f"scale_factor entries must be integers, got {factor!r} in {scale_factor!r}"
            )
        if factor < 1:
            raise ParameterError(
                f"scale_factor entries must be >= 1, got {factor!r} in {scale_factor!r}"
            )
    return tuple(int(f) for f in factors)


def downscale_shape(shape: Sequence[int], factors: int | Sequence[int]) -> tuple[int, ...]:
    """Shape after downsampling by `factors` (an int or one per axis, checked as the flows check
    `scale_factor`), in ceil mode (a partial edge window still counts).

    >>> downscale_shape((37, 41, 23), (2, 2, 2))
    (19, 21, 12)
    >>> downscale_shape((37, 41, 23), 2)
    (19, 21, 12)
    """
    factors = normalize_factors(factors, len(shape))
    return tuple(-(-int(size) // factor) for size, factor in zip(shape, factors))
