"""`WrappedSink`: the part every sink wrapper shares (a throttled sink, a stamping sink): shape,
dtype, write unit, reads and every other attribute are the inner sink's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class WrappedSink:
    """`inner`, a sink of bioimage_tasks.io or another wrapper; subclasses change `start_write`."""

    inner: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inner.shape

    @property
    def dtype(self) -> np.dtype:
        return self.inner.dtype

    @property
    def write_unit(self) -> tuple[int, ...] | None:
        return self.inner.write_unit

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.inner[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in {f.name for f in fields(self)}:  # unpickling, copying
            raise AttributeError(name)
        return getattr(self.inner, name)

    def start_write(self, key: tuple[slice, ...], values: Any) -> Callable[[], None]:
        return self.inner.start_write(key, values)

    def write(self, key: tuple[slice, ...], values: Any) -> None:
        self.start_write(key, values)()
