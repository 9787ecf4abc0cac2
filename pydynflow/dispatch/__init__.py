"""Worlds talking through their database: registry, requests, replies, invalidation.

Each world runs one dispatch thread (`thread.DispatchThread`): it keeps the world's record
alive (`registry.WorldRegistry`), applies the requests addressed to an executor world
(`server.RequestServer`), and hands replies to the calls of a client world waiting for them
(`client.RequestClient`). The database is the only thing the worlds share.
"""

from pydynflow.dispatch.client import RequestClient
from pydynflow.dispatch.invalidation import Invalidator
from pydynflow.dispatch.registry import WorldRegistry
from pydynflow.dispatch.server import RequestServer
from pydynflow.dispatch.thread import DispatchThread

__all__ = ["DispatchThread", "Invalidator", "RequestClient", "RequestServer", "WorldRegistry"]
