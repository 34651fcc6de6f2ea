"""One error hierarchy, so callers can tell a bad argument from a storage fault or failed blocks.

Every error we raise on purpose derives from `BioimageTasksError`. `ParameterError` is also a
`ValueError` and `StorageError` an `OSError`, so code that caught those before still does.

>>> issubclass(ParameterError, ValueError) and issubclass(ParameterError, BioimageTasksError)
True
"""

from __future__ import annotations


class BioimageTasksError(Exception):
    """Base of every error bioimage-tasks raises on purpose."""


class ParameterError(BioimageTasksError, ValueError):
    """A parameter (or the input it names) cannot be used; raised before anything is written,
    and the message names the parameter."""


class StorageError(BioimageTasksError, OSError):
    """A store could not be reached or read/written (an endpoint that does not answer, ...)."""
