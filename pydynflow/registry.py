"""The registry of `Action` subclasses: the only way a stored class name becomes a class.

Every subclass of `Action` registers itself under ``"module.QualName"`` when it is defined.
A stored name that is not registered resolves to a placeholder
(`pydynflow.action.resolve_action_class`) whose phases fail with "action class <name> not
found"; nothing is ever imported or unpickled by name.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydynflow.action import Action

_lock = threading.Lock()
_classes: dict[str, type[Action]] = {}
_subscriptions: dict[type[Action], list[type[Action]]] | None = None


_names: dict[type, str] = {}


def class_name(action_class: type) -> str:
    """Return the name an action class is stored under: ``"module.QualName"``.

    Cached per class: every step and action of every plan holds this string, and sharing
    one object keeps many waiting plans smaller. A worker process imports the user's
    script as ``__mp_main__``: its classes keep their ``__main__`` names.
    """
    name = _names.get(action_class)
    if name is None:
        module = action_class.__module__
        if module == "__mp_main__":
            module = "__main__"
        name = _names[action_class] = f"{module}.{action_class.__qualname__}"
    return name


def register(action_class: type[Action]) -> None:
    """Register ``action_class`` (called by ``Action.__init_subclass__``)."""
    global _subscriptions
    with _lock:
        _classes[class_name(action_class)] = action_class
        _subscriptions = None


def registered_classes() -> list[type[Action]]:
    """Return every registered action class, in registration order."""
    with _lock:
        return list(_classes.values())


def lookup(name: str) -> type[Action] | None:
    """Return the class registered as ``name``, or None."""
    return _classes.get(name)


def subscribed_actions(action_class: type[Action]) -> list[type[Action]]:
    """Return the classes that subscribe to exactly ``action_class``, in registration order."""
    global _subscriptions
    index = _subscriptions
    if index is None:
        index = {}
        for subscriber in registered_classes():
            targets = subscriber.subscribe
            if targets is None:
                continue
            for target in targets if isinstance(targets, (list, tuple)) else [targets]:
                index.setdefault(target, []).append(subscriber)
        _subscriptions = index
    return list(index.get(action_class, []))
