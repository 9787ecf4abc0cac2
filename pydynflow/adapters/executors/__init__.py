"""Where user code runs: a pool of threads per queue (processes come with supervision)."""

from pydynflow.adapters.executors.base import WorkerPool
from pydynflow.adapters.executors.threads import ThreadWorkers

__all__ = ["ThreadWorkers", "WorkerPool"]
