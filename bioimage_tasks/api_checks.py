"""Checks of the method parameters the plain API and the flows share (`method`, `order`,
`anti_aliasing`, the input's dtype, a label image's options), run before anything is created.
Each raises a `ParameterError` that names the parameter at fault."""

from __future__ import annotations

from typing import Any

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.kernels.window import METHODS as WINDOW_METHODS
from bioimage_tasks.kernels.window import SUPPORTED_DTYPES as WINDOW_DTYPES
from bioimage_tasks.pyramid_formats import PrecomputedOutput
from bioimage_tasks.resampling import check_anti_aliasing, check_order

METHODS = ("resize", *WINDOW_METHODS)


def check_method_options(method: str, order: int, anti_aliasing: bool) -> None:
    """Reject an unknown method, an order outside 0-5, and resize options given to a window
    method."""
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
    check_order(order)
    check_anti_aliasing(anti_aliasing)
    if method != "resize" and (order != 0 or anti_aliasing):
        raise ParameterError(
            f"order and anti_aliasing apply to method='resize' only, not method={method!r}"
        )


def check_input_dtype(dtype: np.dtype, method: str, order: int, anti_aliasing: bool) -> None:
    """Reject an input dtype the method cannot reduce exactly (byte order aside)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b" and (order > 0 or anti_aliasing):
        raise ParameterError(
            "a bool input needs order=0 and anti_aliasing=False (interpolation is undefined "
            "for bool)"
        )
    if method != "resize" and dtype.kind == "c":
        raise ParameterError(
            f"input has dtype {dtype}, which method={method!r} does not take: the window methods "
            "reduce real numbers (tensorstore's complex mean divides as complex numbers, so an inf "
            "or NaN part turns the other part into NaN). method='resize' resamples the real and "
            "imaginary parts; or downsample the two parts as arrays of their own"
        )
    if method != "resize" and dtype.newbyteorder("=") not in WINDOW_DTYPES:
        supported = sorted(str(d) for d in WINDOW_DTYPES)
        raise ParameterError(
            f"input has dtype {dtype}: method={method!r} supports {supported} "
            "(in either byte order), not that one"
        )


def check_label_options(
    group_path: Any, dtype: Any, method: str, order: int, anti_aliasing: bool
) -> None:
    """A label image lives at <image>/labels/<name>, holds integers, and is downsampled
    label-safely."""
    parts = getattr(group_path, "key", "").split("/")
    if not isinstance(group_path, PrecomputedOutput) and (len(parts) < 2 or parts[-2] != "labels"):
        raise ParameterError(
            f"labels=True needs output_group '<image>.zarr/labels/<name>', got {str(group_path)!r}"
        )
    if np.dtype(dtype).kind not in "iub":
        raise ParameterError(f"label images hold integers, got dtype {dtype}")
    if method == "mean" or (method == "resize" and (order > 0 or anti_aliasing)):
        raise ParameterError(
            f"method={method!r} (order {order}, anti_aliasing {anti_aliasing}) mixes label ids; "
            "use mode, min, max, median, stride or resize with order 0"
        )
