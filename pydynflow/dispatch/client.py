"""`RequestClient`: a client world's calls to executor worlds, answered through the database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydynflow import errors
from pydynflow.errors import DynflowError, UnknownPlan
from pydynflow.plan import ExecutionPlan
from pydynflow.promise import Promise
from pydynflow.states import PlanState
from pydynflow.storage.requests import ANY_EXECUTOR
from pydynflow.storage.store import Storage

_ENDED = (PlanState.STOPPED, PlanState.PAUSED)
_GOES_ON = ("stop", "crash")
"""Why a plan paused when an executor world continues it on its own (its world stopped or
died): a client's wait goes on, as the plan does."""


class RequestClient:
    """Post requests for executor worlds and wait for their replies.

    Replies and "plan done" notices reach `resolve` from the world's dispatch thread; plans
    a caller waits for are also looked at in the database from time to time (`check_plans`),
    so that a notice lost with a dead executor does not leave the caller waiting.

    Args:
        storage: the shared database.
        world_id: this world's id (where replies are addressed).
        request_timeout: seconds to wait for a reply.
        load: how a finished plan is read for its waiter.
    """

    def __init__(
        self,
        storage: Storage,
        world_id: str,
        *,
        request_timeout: float,
        load: Callable[[str], ExecutionPlan],
    ) -> None:
        self.storage = storage
        self.world_id = world_id
        self.request_timeout = request_timeout
        self.load = load
        self._lock = threading.Lock()
        self._replies: dict[str, Promise[dict[str, Any]]] = {}  # by request token
        self._plans: dict[str, list[Promise[ExecutionPlan]]] = {}
        self._since: dict[str, float] = {}  # when the oldest wait of each plan began

    def call(
        self,
        kind: str,
        *,
        inbox: str = ANY_EXECUTOR,
        store: Callable[[str, dict[str, Any]], object] | None = None,
        **fields: Any,
    ) -> Any:
        """Send a request to an executor world (``inbox``: one world's, or any executor's)
        and return its reply's value. ``store(inbox, request)``: how the request is stored
        (default: a transaction of its own; a trigger stores it with its plan).

        Raises:
            DynflowError: the executor's error, as the class it raised when it is one of
                `pydynflow.errors` (`EventRejected`, `UnknownStep`, ...).
            TimeoutError: no reply within ``request_timeout`` (the request stays stored
                and is applied when an executor reads it).
        """
        reply: Promise[dict[str, Any]] = Promise()
        # Replies name their request by a token: envelope ids are reused on SQLite.
        token = uuid.uuid4().hex
        request = {"kind": kind, "sender": self.world_id, "token": token, **fields}
        with self._lock:
            self._replies[token] = reply
        try:
            (store or self.storage.post_request)(inbox, request)
        except BaseException:
            with self._lock:
                self._replies.pop(token, None)
            raise
        try:
            answer = reply.result(self.request_timeout)
        except TimeoutError:
            with self._lock:
                self._replies.pop(token, None)
            raise TimeoutError(
                f"no executor world answered the {kind} request within "
                f"{self.request_timeout:g} s (it stays stored for the next executor)"
            ) from None
        if "error" in answer:
            raise _error(answer["error"])
        return answer.get("ok")

    def post(
        self,
        kind: str,
        *,
        inbox: str = ANY_EXECUTOR,
        store: Callable[[str, dict[str, Any]], object] | None = None,
        **fields: Any,
    ) -> None:
        """Store a request for an executor world without waiting for its reply (there may
        be no executor yet: the next one to read its inbox applies it); ``store``: as for
        `call`."""
        request = {"kind": kind, "sender": self.world_id, **fields}
        (store or self.storage.post_request)(inbox, request)

    def wait_plan(self, plan_id: str) -> Promise[ExecutionPlan]:
        """Return a promise resolved with the plan once it is ``stopped``, or ``paused``
        for a person: a plan paused because its executor world stopped or died goes on
        elsewhere, and so does the wait."""
        promise: Promise[ExecutionPlan] = Promise()
        with self._lock:
            self._plans.setdefault(plan_id, []).append(promise)
            self._since.setdefault(plan_id, time.monotonic())
        return promise

    def fail_wait(
        self, plan_id: str, promise: Promise[ExecutionPlan], error: BaseException
    ) -> None:
        """Fail one wait of `wait_plan` (its request could not be sent)."""
        with self._lock:
            promises = self._plans.get(plan_id, [])
            if promise in promises:
                promises.remove(promise)
            if not promises:
                self._plans.pop(plan_id, None)
                self._since.pop(plan_id, None)
        promise.set_exception(error)

    def resolve(self, data: dict[str, Any]) -> None:
        """Take a reply or a "plan done" notice read from this world's reply inbox."""
        if "plan_done" in data:
            if "error" in data:  # the executor could not run it
                self._settle(str(data["plan_done"]), None, _error(data["error"]))
            else:
                self._plan_ended(str(data["plan_done"]))
            return
        with self._lock:
            promise = self._replies.pop(str(data.get("token")), None)
        if promise is not None:  # None: a call that gave up waiting
            promise.set_result(data)

    def check_plans(self, older_than: float) -> None:
        """Resolve the waits (begun over ``older_than`` seconds ago) of plans the database
        shows ended: a safety net for a notice lost with its executor. A younger wait is
        left to its notice, which may carry an error (the plan could not run)."""
        before = time.monotonic() - older_than
        with self._lock:
            waited = [plan_id for plan_id, since in self._since.items() if since < before]
        if not waited:
            return
        states = self.storage.plan_states(waited)  # one query; only ended plans are loaded
        for plan_id in waited:
            if states.get(plan_id) in (None, *_ENDED):
                self._plan_ended(plan_id)

    def _plan_ended(self, plan_id: str) -> None:
        with self._lock:
            if plan_id not in self._plans:
                return
        try:
            plan = self.load(plan_id)
        except UnknownPlan as exc:
            self._settle(plan_id, None, exc)
            return
        if plan.state == PlanState.STOPPED or (
            plan.state == PlanState.PAUSED and plan.pause_reason() not in _GOES_ON
        ):
            self._settle(plan_id, plan, None)

    def _settle(
        self, plan_id: str, plan: ExecutionPlan | None, error: BaseException | None
    ) -> None:
        with self._lock:
            promises = self._plans.pop(plan_id, [])
            self._since.pop(plan_id, None)
        for promise in promises:
            if error is not None:
                promise.set_exception(error)
            else:
                assert plan is not None
                promise.set_result(plan)

    def fail_all(self, error: BaseException) -> None:
        """Fail every pending call and wait (the world is stopping)."""
        with self._lock:
            replies, self._replies = self._replies, {}
            plans, self._plans = self._plans, {}
            self._since.clear()
        for reply in replies.values():
            reply.set_exception(error)
        for promises in plans.values():
            for promise in promises:
                promise.set_exception(error)


def _error(error: dict[str, Any]) -> DynflowError:
    """Return the exception an executor's error reply stands for."""
    cls = getattr(errors, str(error.get("class")), None)
    message = str(error.get("message"))
    if isinstance(cls, type) and issubclass(cls, DynflowError):
        return cls(message)
    return DynflowError(f"{error.get('class')}: {message}")
