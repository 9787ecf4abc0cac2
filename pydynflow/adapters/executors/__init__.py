"""Where user code runs: the worker-pool interface, a pool of threads per queue
(`ThreadWorkers`) and a pool of supervised worker processes (`ProcessWorkers`)."""

from pydynflow.adapters.executors.base import WorkerPool
from pydynflow.adapters.executors.processes import ProcessWorkers, WorkerDied
from pydynflow.adapters.executors.threads import ThreadWorkers

__all__ = ["ProcessWorkers", "ThreadWorkers", "WorkerDied", "WorkerPool"]
