"""`Stack`: the middleware of one action class, and the calls of a hook through them.

A stack keeps, per hook, only the classes that define it: a phase no middleware wraps is
called directly, with no layer at all. ``call`` builds the chain of one call, outermost
first, each layer an instance holding the action.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from pydynflow.errors import DynflowError
from pydynflow.middleware.base import HOOKS, Middleware

Classes = tuple[type[Middleware], ...]


def _wraps(cls: type[Middleware], hook: str) -> bool:
    """Return whether ``cls`` adds a layer to ``hook``: it defines it, and is not inert."""
    return getattr(cls, hook) is not getattr(Middleware, hook) and not cls.__dict__.get(
        "_inert", False
    )


class Stack:
    """The middleware wrapping one action class, outermost first (``classes``), and for
    each hook (``stack.run``, ``stack.present``...) the classes that define it."""

    __slots__ = ("classes", *HOOKS, "async_run_hooks", "error")

    plan: Classes
    run: Classes
    finalize: Classes
    plan_phase: Classes
    finalize_phase: Classes
    delay: Classes
    present: Classes

    def __init__(self, classes: Classes = (), error: str | None = None) -> None:
        """Sort ``classes`` out by the hooks they define (``error``: see `unresolved`)."""
        self.classes = classes
        self.error = error
        for hook in HOOKS:
            setattr(self, hook, tuple(cls for cls in classes if _wraps(cls, hook)))
        self.async_run_hooks = tuple(c for c in self.run if inspect.iscoroutinefunction(c.run))

    @classmethod
    def unresolved(cls, error: str) -> Stack:
        """Return the stack of a class whose middleware cannot be ordered: its run and
        finalize fail with ``error``."""
        return cls((_Unresolved,), error)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Stack, (self.classes, self.error))  # to a worker process: classes by reference

    def __repr__(self) -> str:
        return f"Stack({[cls.__qualname__ for cls in self.classes]})"


class _Unresolved(Middleware):
    """Stands for middleware whose ordering rules form a cycle: fail the phase, saying so."""

    __slots__ = ()

    def run(self, call_next: Callable[[Any], Any], event: Any) -> Any:
        raise DynflowError(_error_of(self.action))

    def finalize(self, call_next: Callable[[], Any]) -> Any:
        raise DynflowError(_error_of(self.action))


def _error_of(action: Any) -> str:
    stack = action._middleware
    return str(stack.error) if stack is not None else "middleware cannot be resolved"


def call(
    classes: Classes,
    hook: str,
    action: Any,
    inner: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Call ``inner(*args, **kwargs)`` through the ``hook`` of each of ``classes`` (the
    first outermost); return what the outermost returned."""
    call_next = inner
    for cls in reversed(classes):
        call_next = functools.partial(getattr(cls(action), hook), call_next)
    return call_next(*args, **kwargs)


def call_run(stack: Stack, action: Any, event: Any, inner: Callable[[Any], Any]) -> Any:
    """Call a sync run, ``inner(event)``, through the run hooks of ``stack``.

    Raises:
        DynflowError: a run hook is ``async def``: it can only wrap an ``async def run``.
    """
    if stack.async_run_hooks:
        hook = stack.async_run_hooks[0]
        raise DynflowError(
            f"{hook.__qualname__}.run is async def: it wraps only async runs, and "
            f"{type(action).__qualname__}.run is a def; make the hook a def that returns "
            "call_next(event) (it may check whether the action's run is async)"
        )
    return call(stack.run, "run", action, inner, event)


async def call_run_async(
    stack: Stack, action: Any, event: Any, inner: Callable[[Any], Awaitable[Any]]
) -> Any:
    """Await an async run, ``inner(event)``, through the run hooks of ``stack``: each layer's
    ``call_next(event)`` returns an awaitable, and what a hook returns is awaited."""
    classes = stack.run
    last = len(classes)

    async def layer(index: int, event: Any) -> Any:
        if index == last:
            return await inner(event)
        result = classes[index](action).run(functools.partial(layer, index + 1), event)
        if inspect.isawaitable(result):
            result = await result
        return result

    return await layer(0, event)
