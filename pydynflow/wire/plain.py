"""Pickles of the plain tuples the world and its writer process exchange (change sets in,
answers out): never of anything read from a database."""

from __future__ import annotations

import pickle
from typing import Any


def dumps(value: Any) -> bytes:
    """Return ``value`` (builtins only) as bytes for the pipe."""
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def loads(data: bytes | memoryview) -> Any:
    """Return what `dumps` made of a value, sent by our own process's peer."""
    return pickle.loads(data)
