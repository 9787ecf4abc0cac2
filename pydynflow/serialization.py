"""Check and normalise the JSON-compatible data actions keep in ``input`` and ``output``."""

from __future__ import annotations

import math
from typing import Any

from pydynflow.errors import SerializationError
from pydynflow.references import OutputReference
from pydynflow.registry import class_name


def normalize(value: Any, *, owner: Any, field: str, allow_references: bool = False) -> Any:
    """Return a JSON-shaped copy of ``value`` made of plain builtins only, or raise.

    The copy is what ``json.loads(json.dumps(value))`` returns: tuples become lists and an
    instance of a subclass of ``str``, ``int``, ``float``, ``dict`` or ``list`` (a ``str``
    enum, an ``IntEnum``, an ``OrderedDict``, ...) becomes the plain builtin. The copy goes
    pickled to the writer process, which cannot load the user's classes.

    Args:
        value: the data to check.
        owner: who holds it, named in the error message: a name, or an action class (named
            only if there is an error: this runs for every step).
        field: ``"input"``, ``"output"``, ``"output chunk"`` or ``"event"``, used in the
            error message.
        allow_references: whether `OutputReference` values are accepted (inputs only).

    Raises:
        SerializationError: naming ``owner``, ``field`` and the key path of the first value
            that JSON cannot represent.
    """
    if type(value) is dict:  # `_normalize`'s flat case, without its calls: most data is this
        for key, item in value.items():
            if type(key) is not str or type(item) not in _PLAIN:
                break
        else:
            return dict(value)
    return _normalize(value, owner, field, allow_references, ())


def copy_plain(value: Any) -> Any:
    """Return a copy of JSON-plain data (normalized) that shares no dict or list with it.

    An action's ``output`` is a copy of what its record holds: code that changes a list
    in it in place must not change the record, or the change would look stored already.
    """
    if isinstance(value, dict):  # a `ReadOnlyDict` input too: a plain dict comes back
        return {
            key: copy_plain(item) if type(item) in _CONTAINERS else item
            for key, item in value.items()
        }
    if type(value) is list:
        return [copy_plain(item) if type(item) in _CONTAINERS else item for item in value]
    return value


_CONTAINERS = (dict, list)

# Exact types whose values are returned as they are (floats are checked for finiteness).
_PLAIN = frozenset({str, int, bool, type(None)})


def _normalize(value: Any, owner: Any, field: str, refs: bool, path: tuple[Any, ...]) -> Any:
    if type(value) in _PLAIN:  # the common case first: a type check instead of isinstance
        return value
    if type(value) is dict and all(
        type(key) is str and type(item) in _PLAIN for key, item in value.items()
    ):
        return dict(value)  # flat and plain (most inputs): a copy, nothing to check further
    if isinstance(value, float):
        number = float.__float__(value)  # what `json.dumps` writes, whatever __float__ says
        if not math.isfinite(number):
            raise _error(owner, field, path, f"the float {value!r} is not valid JSON")
        return number
    if isinstance(value, str):  # a subclass: its characters (str() of a str enum is "K.A")
        return str.__str__(value)
    if isinstance(value, int):  # a subclass (bool is plain): its value, as `json.dumps` writes
        return int.__int__(value)
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise _error(owner, field, (*path, key), f"the key {key!r} is not a str")
                key = str.__str__(key)
            result[key] = _normalize(item, owner, field, refs, (*path, key))
        return result
    if isinstance(value, (list, tuple)):
        return [_normalize(item, owner, field, refs, (*path, i)) for i, item in enumerate(value)]
    if refs and isinstance(value, OutputReference):
        return value
    raise _error(
        owner, field, path, f"a value of type {type(value).__qualname__} is not JSON-serialisable"
    )


def _error(owner: Any, field: str, path: tuple[Any, ...], why: str) -> SerializationError:
    where = "".join(f"[{key!r}]" for key in path) or " (the whole value)"
    if isinstance(owner, type):
        owner = class_name(owner)
    return SerializationError(f"{owner}: {field}{where}: {why}")
