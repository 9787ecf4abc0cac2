"""`WorldMiddleware` (``world.middleware``): a world's rules over every action class's, and
the stack of each action class, resolved once and kept.

A cycle in the ordering rules is an error where it is written: a world's own rules at
`WorldMiddleware.use` (or ``World(middleware=...)``), an action class's own rules when the
class is defined. A cycle only the two make together fails what needs that class's stack:
planning it, or its step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from pydynflow.errors import DynflowError
from pydynflow.middleware.base import Middleware, Transaction
from pydynflow.middleware.rules import Classes, Register, Spec, class_register, resolve
from pydynflow.middleware.stack import Stack, call


class WorldMiddleware:
    """The middleware of one world: outermost around every action's own.

    Every world starts with `Transaction` (inert until replaced), then the ``middleware``
    given to `World`; `use` adds more. Configure it before plans run: the stack of each
    action class is resolved on first use and kept.
    """

    def __init__(self, specs: Iterable[Spec] = ()) -> None:
        """Start with `Transaction`, then ``specs`` (classes, `Use`, `DoNotUse`).

        Raises:
            DynflowError: the rules form a cycle.
            TypeError: an entry is not a middleware class, `Use` or `DoNotUse`.
        """
        register = Register([Transaction])
        register.add(specs)
        resolve(register)
        self._register = register
        self._stacks: dict[type, Stack] = {}
        self._lock = threading.Lock()

    def use(
        self,
        middleware: type[Middleware],
        before: Classes = None,
        after: Classes = None,
        replace: Classes = None,
    ) -> None:
        """Wrap every action of the world in ``middleware``, outside the actions' own.

        ``before``/``after``: classes it goes outside/inside of; ``replace``: classes it
        takes the place of (each a class or a list).

        Raises:
            DynflowError: the world's rules form a cycle; nothing changes.
        """
        self._change(lambda register: register.use(middleware, before, after, replace))

    def do_not_use(self, middleware: type[Middleware]) -> None:
        """Take ``middleware`` out of the stack of every action of the world."""
        self._change(lambda register: register.use(None, replace=middleware))

    def resolve(self, action_class: type) -> tuple[type[Middleware], ...]:
        """Return the middleware wrapping ``action_class`` here, outermost first."""
        return self.stack(action_class).classes

    def stack(self, action_class: type) -> Stack:
        """Return the `Stack` of ``action_class`` (resolved on first use, then kept).

        Raises:
            DynflowError: the world's rules and the class's form a cycle together.
        """
        stack = self._stacks.get(action_class)
        if stack is None:
            stack = self._stacks[action_class] = Stack(_resolve(self._register, action_class))
        return stack

    def execute(
        self, hook: str, action: Any, inner: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Call ``inner(*args, **kwargs)`` through the ``hook`` of ``action``'s middleware.

        ``world.delay`` runs ``execute("delay", action, inner, options, *args, **kwargs)``.
        """
        classes = getattr(self.stack(type(action)), hook)
        if not classes:
            return inner(*args, **kwargs)
        return call(classes, hook, action, inner, *args, **kwargs)

    def _change(self, change: Callable[[Register], None]) -> None:
        with self._lock:
            register = self._register.copy()
            change(register)
            resolve(register)
            self._register, self._stacks = register, {}

    def __repr__(self) -> str:
        return f"<WorldMiddleware {[_label(cls) for cls in self._register.rules]}>"


def _resolve(register: Register, action_class: type) -> tuple[type[Middleware], ...]:
    merged = register.copy()
    merged.merge(class_register(action_class))
    return resolve(merged)


def check_action_class(action_class: type) -> None:
    """Check a new action class's own rules: a cycle raises `DynflowError`, an entry that
    is not middleware `TypeError`, each naming the class."""
    if "middleware" in vars(action_class):
        try:
            class_stack(action_class)
        except DynflowError as exc:
            raise DynflowError(f"{action_class.__qualname__}.middleware: {exc}") from None


def _label(cls: type | None) -> str:
    return "DoNotUse" if cls is None else cls.__qualname__


_class_stacks: dict[type, Stack] = {}


def class_stack(action_class: type) -> Stack:
    """Return the stack of ``action_class``'s own middleware, no world's (kept per class)."""
    stack = _class_stacks.get(action_class)
    if stack is None:
        stack = _class_stacks[action_class] = Stack(resolve(class_register(action_class)))
    return stack
