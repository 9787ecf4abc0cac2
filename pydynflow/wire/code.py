"""Pickles of jobs for worker processes (a function, an action, its input) and their results,
with dill, so that code defined in ``__main__`` travels by value: never of stored data."""

from __future__ import annotations

import functools
import io
import sys
import weakref
from typing import Any

import dill

_class_values: weakref.WeakKeyDictionary[type, bytes] = weakref.WeakKeyDictionary()


def point_at_main() -> None:
    """In a worker process: send functions defined in ``__main__`` to the user's script.

    dill gives a function sent by value from ``__main__`` the globals of the ``__main__``
    it saw when imported (the fork server's); in a worker ``__main__`` is the user's
    script, which multiprocess imported again as ``__mp_main__``.
    """
    dill._dill._main_module = sys.modules["__main__"]


class _Pickler(dill.Pickler):  # type: ignore[misc]
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type) and obj.__module__ == "__main__":
            value = _class_values.get(obj)
            if value is None:
                value = _class_values[obj] = dill.dumps(obj, protocol=dill.HIGHEST_PROTOCOL)
            return ("__main__", obj.__qualname__, value)
        return None


class _Unpickler(dill.Unpickler):  # type: ignore[misc]
    def persistent_load(self, pid: Any) -> Any:
        _, qualname, value = pid
        return _main_class(qualname, value)


@functools.lru_cache(maxsize=256)
def _main_class(qualname: str, value: bytes) -> type:
    """Return this process's ``__main__`` class ``qualname``, else the class in ``value``."""
    found: Any = sys.modules["__main__"]
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) else dill.loads(value)


def dumps(obj: Any) -> bytes:
    """Return ``obj`` as bytes; a ``__main__`` class goes by value, once per class."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=dill.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Return what `dumps` made (a ``__main__`` class: this process's own, if it has one)."""
    return _Unpickler(io.BytesIO(data)).load()
