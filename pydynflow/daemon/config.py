"""`WorkerConfig`: the executor world each child of ``pydynflow worker`` runs, as plain data.

The supervisor sends it to each child as JSON (never on the command line, where ``ps``
would show a database password); `import_apps` imports the application's modules so that
their `Action` classes register, in the supervisor first (a module that fails is reported
before anything starts) and then in each child.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydynflow.errors import DynflowError

__all__ = ["AppImportError", "WorkerConfig", "import_apps"]


class AppImportError(DynflowError):
    """An application module given to the worker could not be imported.

    Attributes:
        module: the module's name.
    """

    def __init__(self, module: str, error: BaseException) -> None:
        super().__init__(f"cannot import {module}: {type(error).__name__}: {error}")
        self.module = module


def import_apps(modules: Iterable[str]) -> None:
    """Import ``modules`` by name, from the current directory first, as ``python -m`` does.

    Raises:
        AppImportError: a module failed to import (not found, or its code raised).
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    for module in modules:
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as exc:
            raise AppImportError(module, exc) from exc


@dataclass(frozen=True)
class WorkerConfig:
    """What every executor process of the daemon runs.

    Attributes:
        db: the database URL.
        apps: the modules each child imports before its world starts.
        pool_size: worker threads of each world's ``default`` queue.
        queues: each world's extra queues and their pool sizes.
        name: the daemon's name: child ``i``'s world is ``<name>-<i>``, the supervisor's
            own client world ``<name>-supervisor``.
        stop_timeout: how long (seconds) a child's running steps may finish on SIGTERM.
        fatal_persistence_timeout: how long (seconds) a child's world rides out a database
            it cannot write before it stops for good (and the daemon with it).
    """

    db: str
    apps: tuple[str, ...] = ()
    pool_size: int = 5
    queues: dict[str, int] = field(default_factory=dict)
    name: str = "pydynflow-worker"
    stop_timeout: float = 30.0
    fatal_persistence_timeout: float = 60.0

    def world_name(self, index: int) -> str:
        """Return the name of child ``index``'s world."""
        return f"{self.name}-{index}"

    def to_data(self) -> dict[str, Any]:
        """Return this configuration as JSON-compatible data."""
        data = asdict(self)
        data["apps"] = list(self.apps)
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> WorkerConfig:
        """Return the configuration `to_data` returned ``data`` for."""
        return cls(**{**data, "apps": tuple(data.get("apps", ())), "queues": dict(data["queues"])})
