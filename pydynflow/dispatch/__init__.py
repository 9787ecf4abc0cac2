"""Worlds talking through their database: registry, requests, replies, invalidation.

Each world runs one dispatch thread (`thread.DispatchThread`): it keeps the world's record
alive (`registry.WorldRegistry`), applies the requests addressed to an executor world
(`server.RequestServer`), and hands replies to the calls of a client world waiting for them
(`client.RequestClient`). The database is the only thing the worlds share. `World` takes
two parts from here: `sharing.SharingMixin` (recovery, hand-over, routing requests to the
world that runs a plan) and `operations.OperationsMixin` (skip, event, cancel, halt).
"""

from pydynflow.dispatch.client import RequestClient
from pydynflow.dispatch.invalidation import Invalidator
from pydynflow.dispatch.registry import WorldRegistry
from pydynflow.dispatch.server import RequestServer
from pydynflow.dispatch.thread import DispatchThread

__all__ = ["DispatchThread", "Invalidator", "RequestClient", "RequestServer", "WorldRegistry"]
