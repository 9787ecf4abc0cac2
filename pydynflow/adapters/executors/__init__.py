"""Where user code runs: a pool of threads, or of supervised worker processes, per queue."""

from pydynflow.adapters.executors.base import WorkerPool
from pydynflow.adapters.executors.processes import ProcessWorkers, WorkerDied
from pydynflow.adapters.executors.threads import ThreadWorkers

__all__ = ["ProcessWorkers", "ThreadWorkers", "WorkerDied", "WorkerPool"]
