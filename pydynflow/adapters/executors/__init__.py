"""Where user code runs: the worker-pool interface and a pool of threads per queue.

The pool of supervised worker processes, `pydynflow.actors.process_pool.ProcessWorkers`,
implements the same interface; it lives with the actors because it is a supervisor.
"""

from pydynflow.adapters.executors.base import WorkerPool
from pydynflow.adapters.executors.threads import ThreadWorkers

__all__ = ["ThreadWorkers", "WorkerPool"]
