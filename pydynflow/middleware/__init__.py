"""Middleware: layers around the phases of actions, per action class and per world.

An action class lists its middleware in ``middleware`` (extended by subclasses); a world
adds its own, outermost (``World(middleware=...)``, ``world.middleware.use``). Entries are
middleware classes, `Use` (with ordering rules) and `DoNotUse`. Guide:
``docs/guides/extending.md``.
"""

from pydynflow.middleware.base import HOOKS, Middleware, Transaction
from pydynflow.middleware.present import present_plan
from pydynflow.middleware.rules import DoNotUse, Spec, Use
from pydynflow.middleware.stack import Stack, call, call_run, call_run_async
from pydynflow.middleware.world import WorldMiddleware, check_action_class, class_stack

__all__ = [
    "HOOKS",
    "DoNotUse",
    "Middleware",
    "Spec",
    "Stack",
    "Transaction",
    "Use",
    "WorldMiddleware",
    "call",
    "call_run",
    "call_run_async",
    "check_action_class",
    "class_stack",
    "present_plan",
]
