"""The ``pydynflow worker`` daemon: a supervisor process over N executor processes.

`Supervisor` (the parent) starts each executor world in a child process of its own
(`pydynflow.daemon.child`), restarts a child that died with a growing delay (`Backoff`),
invalidates a dead child's world at once, and turns SIGTERM into a graceful stop of every
child. `WorkerConfig` is what each child runs. The command line (``pydynflow worker``) is a
thin layer over these; nothing here imports it.
"""

from pydynflow.daemon.backoff import Backoff
from pydynflow.daemon.config import AppImportError, WorkerConfig, import_apps
from pydynflow.daemon.supervisor import EXIT_FATAL, Supervisor

__all__ = ["EXIT_FATAL", "AppImportError", "Backoff", "Supervisor", "WorkerConfig", "import_apps"]
