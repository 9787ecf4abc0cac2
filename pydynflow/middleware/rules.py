"""Which middleware wrap an action class, in which order: Dynflow's register and resolver.

Rules are merged in order (world first, then the action's classes from the base down) and
then sorted: without rules, what was used first is outermost; ``before``/``after`` move a
middleware outside/inside another, ``replace`` puts one in another's place, `DoNotUse`
takes one out. Rules about a middleware that is not in the stack are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydynflow.errors import DynflowError
from pydynflow.middleware.base import Middleware

Classes: TypeAlias = type[Middleware] | Sequence[type[Middleware]] | None


def _classes(value: Classes, what: str) -> tuple[type[Middleware], ...]:
    if value is None:
        return ()
    found = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for one in found:
        if not (isinstance(one, type) and issubclass(one, Middleware)):
            raise TypeError(f"{what} takes Middleware subclasses, got {one!r}")
    return found


@dataclass(frozen=True, init=False)
class Use:
    """Use ``middleware`` outside of ``before``, inside of ``after``, or instead of
    ``replace`` (each a class or a list of classes): an entry of a ``middleware`` list."""

    middleware: type[Middleware]
    before: tuple[type[Middleware], ...] = ()
    after: tuple[type[Middleware], ...] = ()
    replace: tuple[type[Middleware], ...] = ()

    def __init__(
        self,
        middleware: type[Middleware],
        *,
        before: Classes = None,
        after: Classes = None,
        replace: Classes = None,
    ) -> None:
        """Check the classes and keep them as tuples."""
        object.__setattr__(self, "middleware", _classes(middleware, "Use")[0])
        object.__setattr__(self, "before", _classes(before, "before"))
        object.__setattr__(self, "after", _classes(after, "after"))
        object.__setattr__(self, "replace", _classes(replace, "replace"))


@dataclass(frozen=True)
class DoNotUse:
    """Take ``middleware`` out of the stack (an inherited one, a world's): a list entry."""

    middleware: type[Middleware]

    def __post_init__(self) -> None:
        _classes(self.middleware, "DoNotUse")


Spec: TypeAlias = type[Middleware] | Use | DoNotUse


@dataclass
class _Rules:
    before: list[type[Middleware]] = field(default_factory=list)
    after: list[type[Middleware]] = field(default_factory=list)
    replace: list[type[Middleware]] = field(default_factory=list)


class Register:
    """Middleware rules, merged in the order they were given (Dynflow's ``Register``)."""

    def __init__(self, specs: Iterable[Spec] = ()) -> None:
        """Start with ``specs`` (bare classes, `Use` and `DoNotUse` entries)."""
        self.rules: dict[type[Middleware] | None, _Rules] = {}
        self.add(specs)

    def use(
        self,
        middleware: type[Middleware] | None,
        before: Classes = None,
        after: Classes = None,
        replace: Classes = None,
    ) -> None:
        """Add ``middleware`` (None: nothing, in the place of what it replaces) with rules."""
        rules = self.rules.setdefault(middleware, _Rules())
        rules.before.extend(_classes(before, "before"))
        rules.after.extend(_classes(after, "after"))
        rules.replace.extend(_classes(replace, "replace"))

    def add(self, specs: Iterable[Spec]) -> None:
        """Add each entry of a ``middleware`` list."""
        entries: Iterable[Any] = [specs] if isinstance(specs, (type, Use, DoNotUse)) else specs
        for spec in entries:
            if isinstance(spec, Use):
                self.use(spec.middleware, spec.before, spec.after, spec.replace)
            elif isinstance(spec, DoNotUse):
                self.use(None, replace=spec.middleware)
            else:
                self.use(_classes(spec, "a middleware list")[0])  # type: ignore[arg-type]

    def merge(self, other: Register) -> None:
        """Add the rules of ``other`` after these."""
        for middleware, rules in other.rules.items():
            self.use(middleware, rules.before, rules.after, rules.replace)

    def copy(self) -> Register:
        """Return a register with the same rules."""
        copied = Register()
        copied.merge(self)
        return copied


def class_register(action_class: type) -> Register:
    """Return the rules of ``action_class``: each class's ``middleware``, base class first."""
    register = Register()
    for klass in reversed(action_class.__mro__):
        specs = klass.__dict__.get("middleware")
        if specs:
            try:
                register.add(specs)
            except TypeError as exc:
                raise TypeError(f"{klass.__qualname__}.middleware: {exc}") from None
    return register


def resolve(register: Register) -> tuple[type[Middleware], ...]:
    """Return the middleware ``register`` puts in the stack, outermost first.

    Raises:
        DynflowError: the ``before``/``after`` rules form a cycle (the message names it).
    """
    deps: dict[Any, list[Any]] = {cls: list(rules.after) for cls, rules in register.rules.items()}
    substitutes: dict[Any, Any] = {}
    for cls, rules in register.rules.items():
        for dependent in rules.before:
            if dependent in deps:
                deps[dependent].append(cls)
        for replaced in rules.replace:
            substitutes[replaced] = cls
    for old in substitutes:
        if old in deps:
            new = _final(substitutes, old)
            deps.setdefault(new, []).extend(deps.pop(old))
    for after in deps.values():  # a rule about a replaced class is about its substitute
        after[:] = [_final(substitutes, one) for one in after]
        after[:] = [one for one in after if one in deps and one is not None]
    deps.pop(None, None)
    return tuple(_sorted(deps))


def _final(substitutes: dict[Any, Any], cls: Any) -> Any:
    seen = {cls}
    while cls in substitutes:
        cls = substitutes[cls]
        if cls in seen:
            raise DynflowError(f"middleware replace rules form a cycle around {_name(cls)}")
        seen.add(cls)
    return cls


def _sorted(deps: dict[Any, list[Any]]) -> list[Any]:
    """Sort depth first, each class after those it must be inside of (Ruby's ``TSort``)."""
    order: list[Any] = []
    done: set[Any] = set()
    path: list[Any] = []

    def visit(cls: Any) -> None:
        if cls in done:
            return
        if cls in path:
            cycle = [*path[path.index(cls) :], cls]
            raise DynflowError(
                "middleware before/after rules form a cycle (each must be inside the "
                "next): " + " -> ".join(_name(one) for one in cycle)
            )
        path.append(cls)
        for inner in deps[cls]:
            visit(inner)
        path.pop()
        done.add(cls)
        order.append(cls)

    for cls in deps:
        visit(cls)
    return order


def _name(cls: Any) -> str:
    return "nothing" if cls is None else f"{cls.__module__}.{cls.__qualname__}"
