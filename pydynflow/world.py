"""`World`: storage, configuration and the API of a process (one module: one public class).

A world is the universe a process runs pydynflow in. It plans actions into execution plans,
stores them, and (with an executor) runs them on its actor system. Reads (`World.load`,
`World.plans`) go straight to storage. Every operation a user calls is a method of `World`,
so this module is long.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import select
import signal
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pydynflow.action import Action
from pydynflow.actors.executor import ExecutorActor
from pydynflow.actors.hook_runner import HookRunner
from pydynflow.actors.messages import (
    Abandon,
    CancelPlan,
    DeliverEvent,
    ExecutePlan,
    HaltPlan,
    NotRunningHere,
    Terminate,
)
from pydynflow.actors.persistence import (
    Sync,
    changes,
    persist_and_wait,
    request_of,
    start_persistence,
)
from pydynflow.actors.pooled import Dispatcher, tell_and_run
from pydynflow.actors.runtime import Runtime
from pydynflow.adapters.clocks.real import RealClock
from pydynflow.adapters.executors import ThreadWorkers
from pydynflow.adapters.executors.processes import ProcessWorkers
from pydynflow.dispatch import (
    DispatchThread,
    Invalidator,
    RequestClient,
    RequestServer,
    WorldRegistry,
)
from pydynflow.errors import (
    DynflowError,
    EventRejected,
    PersistenceError,
    PlanningError,
    UnknownPlan,
    UnknownStep,
)
from pydynflow.events import EngineEvent, encode_event
from pydynflow.execution import recover_plan
from pydynflow.logging import configure_logging, get_logger
from pydynflow.middleware import Spec, WorldMiddleware, present_plan
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.planning import Planner
from pydynflow.plugins import load_plugins
from pydynflow.promise import Promise
from pydynflow.registry import subscribed_actions
from pydynflow.serialization import normalize
from pydynflow.skipping import skip_plan_steps
from pydynflow.states import Phase, PlanState, Result, StepState
from pydynflow.storage import Storage
from pydynflow.storage.database import redact_url
from pydynflow.storage.requests import ANY_EXECUTOR, reply_inbox, world_inbox
from pydynflow.storage.singleton_lock import take_singleton_lock
from pydynflow.storage.world_lock import WorldLock
from pydynflow.storage.writer import ThreadWriter
from pydynflow.triggered import Triggered
from pydynflow.world_info import WorldInfo

DEFAULT_DB = "sqlite:///pydynflow.db"
DISPATCHER_THREADS = 2  # actor code is short and CPU-bound: more threads only fight the GIL


class _Default:
    """A keyword's default, told apart from the same value passed on purpose (``is``)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:  # signatures and help() show the value
        return repr(self.value)


# Until delayed plans exist, only leaving ``delayed_executor`` out is accepted.
_DELAYED_EXECUTOR: Any = _Default(True)


class World:
    """A pydynflow world: plans, stores and (with an executor) runs execution plans.

    Args:
        db: database URL: ``sqlite:///path.db`` (the default, ``pydynflow.db`` in the current
            directory), ``sqlite:///:memory:`` or ``postgresql://user@host/db``.
        executor: ``True``/``"threads"`` to execute plans here; ``"processes"`` to run the
            user code of sync ``run`` and ``finalize`` phases in supervised worker processes
            (``pool_size`` per queue; a worker that dies fails only its step, which its
            action's policy then handles); ``False`` for a client world that only plans and
            reads.
        pool_size: worker threads of the ``default`` queue.
        queues: extra queues and their pool sizes, e.g. ``{"slow": 1}``.
        middleware: the world's middleware, around every action's own: classes, outermost
            first, and `Use` / `DoNotUse` entries (see ``world.middleware``, a
            `WorldMiddleware`, whose ``use`` adds more).
        auto_rescue: when a plan fails, apply its combined rescue strategy at once
            (``Skip``: skip the failed steps and go on; ``Fail``: stop; otherwise pause).
            ``Retry`` policies act whatever this says.
        auto_execute: on start, execute plans left ``planned``, and continue those a stop or
            a crash interrupted (their steps' policies apply: `Retry` attempts left, `Skip`).
            Plans paused for a person (an error their policy does not rescue) stay paused.
        delayed_executor: not available yet: delayed plans (``World.delay``) do not exist
            yet, so passing it at all, ``True`` (the default it will have) or ``False``,
            raises `DynflowError`; leave it out.
        name: this world's name in its log lines and in the message a second executor world
            on the same database gets (see `start`); defaults to ``<host>-<pid>``.
        clock: the clock timers run on: ``plan_event`` delays, timeouts, polling
            (``pydynflow.testing.ManagedClock`` for virtual time); one thread by default.
        max_recoveries: how many times a step may be under its world's death (its code
            running) before its plan is paused for a person instead of continued.
        fatal_persistence_timeout: how long (seconds) a commit that fails for a passing
            reason (the database restarting, locked, a full disk) is retried, acknowledgements
            held meanwhile. Past it, the world stops at once (`fatal_error` says why): it
            cannot go on with a state it cannot store; a daemon should exit non-zero (see
            `run_forever`).
        stop_timeout: how long (seconds) `stop` called without a timeout, and so the end of
            a ``with World(...)`` block, lets running steps finish; None: as long as they run.
        create: whether a missing SQLite database file is created. None (the default):
            executor worlds create it, client worlds (``executor=False``) open only an
            existing one, so that a mistyped path fails instead of reading an empty database.
        validity_timeout: seconds without a heartbeat after which another world counts
            this one as dead (`worlds`); an executor world invalidates the dead worlds it
            finds.
        heartbeat: seconds between two refreshes of this world's record.
        plugins: import the action modules installed distributions declare under the
            entry-point group ``pydynflow.actions`` (once per process; one that fails to
            import is logged and skipped), so that their subscribed actions are planned.
            False leaves discovery to the application; classes already imported stay
            registered.
    """

    def __init__(
        self,
        db: str = DEFAULT_DB,
        *,
        executor: bool | str = True,
        pool_size: int = 5,
        queues: dict[str, int] | None = None,
        middleware: Sequence[Spec] = (),
        auto_rescue: bool = True,
        auto_execute: bool = True,
        delayed_executor: bool = _DELAYED_EXECUTOR,
        name: str | None = None,
        clock: Any = None,
        max_recoveries: int = 3,
        fatal_persistence_timeout: float = 60.0,
        stop_timeout: float | None = None,
        create: bool | None = None,
        validity_timeout: float = 30.0,
        heartbeat: float = 5.0,
        plugins: bool = True,
    ) -> None:
        if executor not in (True, False, "threads", "processes"):
            raise ValueError(
                f"executor must be True, False, 'threads' or 'processes', got {executor!r}"
            )
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
        for queue, size in (queues or {}).items():
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"queues[{queue!r}] must be a positive int, got {size!r}")
        if not isinstance(max_recoveries, int) or max_recoveries < 1:
            raise ValueError(f"max_recoveries must be a positive int, got {max_recoveries!r}")
        if not isinstance(fatal_persistence_timeout, int | float) or fatal_persistence_timeout <= 0:
            raise ValueError(
                "fatal_persistence_timeout must be a positive number of seconds, "
                f"got {fatal_persistence_timeout!r}"
            )
        for what, seconds in (("validity_timeout", validity_timeout), ("heartbeat", heartbeat)):
            if not isinstance(seconds, int | float) or not seconds > 0:
                raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
        if heartbeat >= validity_timeout:
            raise ValueError(
                f"heartbeat ({heartbeat!r} s) must be shorter than validity_timeout "
                f"({validity_timeout!r} s), or live worlds would look dead"
            )
        if stop_timeout is not None and (
            not isinstance(stop_timeout, int | float) or not stop_timeout >= 0
        ):
            raise ValueError(
                f"stop_timeout must be None or a number of seconds >= 0, got {stop_timeout!r}"
            )
        # Accepted by the API, built by the issues that follow; refuse rather than ignore.
        if delayed_executor is not _DELAYED_EXECUTOR:
            raise DynflowError(
                f"World(delayed_executor={delayed_executor!r}) is not available yet: delayed "
                "plans (World.delay) are not built; leave the argument out"
            )
        if plugins:  # before anything plans, loads or resolves a stored class name
            load_plugins()
        self.id = str(uuid.uuid4())
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.db = db
        self.executor = executor
        self.pool_size = pool_size
        self.queues = {"default": pool_size, **(queues or {})}
        self.middleware = WorldMiddleware(middleware)
        self.auto_rescue = auto_rescue
        self.auto_execute = auto_execute
        self.delayed_executor = True  # the API's default, once delayed plans exist
        self.clock = clock
        self.max_recoveries = max_recoveries
        self.fatal_persistence_timeout = float(fatal_persistence_timeout)
        self.stop_timeout = stop_timeout
        self.validity_timeout = float(validity_timeout)
        self.heartbeat = float(heartbeat)
        self.plugins = plugins
        self.fatal_error: BaseException | None = None
        """Why the world stopped on its own (persistence gone for good), or None."""
        self.storage = Storage(db, create=bool(executor) if create is None else create)
        self.log = get_logger(world_id=self.id, world=self.name)
        self._lock = threading.Lock()
        self._hooks = HookRunner(self.log)  # its thread starts with the first hook
        self._runtime: Runtime | None = None
        self._executor: Any = None
        self._world_lock: WorldLock | None = None
        self._registry = WorldRegistry(
            self.storage,
            self.id,
            name=self.name,
            executor=bool(executor),
            queues=self.queues,
            validity_timeout=self.validity_timeout,
            log=self.log,
        )
        self._client = RequestClient(
            self.storage, self.id, request_timeout=2 * self.validity_timeout, load=self.load
        )
        self._invalidator = (
            Invalidator(self._registry, self._continue_orphan, self.log, self._continue_interrupted)
            if executor
            else None
        )
        self._dispatch: DispatchThread | None = None
        self._stopped = False
        self._halted = False  # the stop (or the fatal stop) is over
        self._wakeups: list[_Wakeup] = []  # `run_forever` calls waiting for the world's end
        self._hurry = False  # a stop in progress must not wait any longer (`_stop_now`)
        self._stop_waiting: threading.Event | None = None  # what that stop waits on
        self.auto_executed: list[Triggered] = []
        """The executions `start` began on its own (``auto_execute``), for inspection."""

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> World:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def started(self) -> bool:
        """Return whether the world is running (started and not stopped)."""
        return self._runtime is not None

    def start(self) -> World:
        """Start the actor system: persistence, and with an executor, the executor (idempotent).

        Every world registers in the database (`worlds`). An executor world holds its
        world lock while it runs (the proof it lives), invalidates the worlds it finds dead
        (their process gone, or their heartbeat too old), then recovers the plans no live
        world runs: steps that were running become ``error`` ("Abnormal termination"), and
        their plans are rescued by their policies; with ``auto_execute``, plans left
        ``planned`` are executed and plans a stop or a crash interrupted are continued.
        Several executor worlds may share a database; each plan runs on one of them.
        """
        with self._lock:
            if self._runtime is not None:
                return self
            if self._stopped:
                raise DynflowError(f"{self!r} was stopped; create a new World")
            configure_logging()
            if self.executor:
                self._world_lock = WorldLock.acquire(self.storage, self.id)
            try:
                self._start_runtime()
                self._registry.register()
            except BaseException:
                if self._world_lock is not None:
                    self._world_lock.release()
                raise
        self.log.info("world started", executor=self.executor, db=self.db)
        if self._invalidator is not None:
            self._invalidator.sweep(recover=False)
            self._recover(self._invalidator)
        self._start_dispatch()
        return self

    def _start_dispatch(self) -> None:
        """Start talking to the other worlds of the database (none share one in memory)."""
        if self.storage.in_memory:
            return
        server = RequestServer(self, self._tell_plan_done) if self.executor else None
        self._dispatch = DispatchThread(
            self._registry,
            self._client,
            server,
            self._invalidator,
            heartbeat=self.heartbeat,
            on_invalidated=self._invalidated,
            log=self.log,
        )
        self._dispatch.start()

    def _continue_orphan(self, plan_id: str) -> None:
        """Take over a running plan whose world died (`Invalidator`): recover it and, with
        ``auto_execute``, continue it."""
        plan = self._recover_orphan(plan_id)
        if plan is not None and self.auto_execute and _interrupted(plan):
            self._execute(plan.id, plan, "continue")  # not kept: a daemon does this for ever

    def _continue_interrupted(self) -> None:
        """A world left: continue the plans a stop or a crash paused (a world that stopped
        gracefully paused those it ran); a claim decides which executor runs each."""
        if not self.auto_execute:
            return
        for plan in self.storage.find_plans(state="paused", limit=None):
            if plan.valid and _interrupted(plan):
                self._execute(plan.id, plan, "continue")

    def _recover_orphan(self, plan_id: str) -> ExecutionPlan | None:
        """Mark the running steps of a plan whose world died "Abnormal termination" and
        store it paused (its policies decide what continuing does); None if unreadable."""
        try:
            plan = self.load(plan_id)
        except PersistenceError as exc:
            self.log.error(
                "cannot recover a plan whose world died", plan_id=plan_id, error=str(exc)
            )
            return None
        if not plan.valid or plan.state != PlanState.RUNNING:
            return None
        steps = recover_plan(plan, self.id, self.max_recoveries)
        self._save(plan, steps=steps)
        self.log.warning(
            "recovered a plan a dead world left running",
            plan_id=plan.id,
            abnormally_terminated=[step.id for step in steps],
        )
        return plan

    def _tell_plan_done(self, sender: str, notice: dict[str, Any]) -> None:
        dispatch = self._dispatch
        if dispatch is not None:
            dispatch.send_later(reply_inbox(sender), notice)

    def _invalidated(self) -> None:
        """This world's record is gone: another world found it dead and invalidated it."""
        if not self.executor:
            self.log.warning("this world's record was removed: registering again")
            self._registry.register()
            return
        self.log.error(
            "this world was invalidated by another world (its heartbeat came too late): "
            "stopping, its plans are recovered elsewhere"
        )
        threading.Thread(target=self.stop, args=(0,), name="pydynflow-invalidated").start()

    def _describe(self) -> dict[str, Any]:
        """Return who this world is, for locks and messages."""
        return {
            "world_id": self.id,
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def _start_runtime(self) -> None:
        """Start persistence, then (with an executor) the worker pools and the executor."""
        # First the persistence actor: its writer process may fail to open the database,
        # and then nothing else has been started.
        persistence, self._persistence_dispatcher = start_persistence(
            self.storage,
            self.id,
            fatal_timeout=self.fatal_persistence_timeout,
            on_fatal=self._persistence_lost,
            on_hooks=self._hooks.submit,
        )
        pools: dict[str, Any] = {}
        processes = self.executor == "processes"
        if self.executor:
            workers = ProcessWorkers if processes else ThreadWorkers
            try:
                for queue, size in self.queues.items():
                    pools[queue] = workers(size, name=f"pydynflow-{queue}")
            except BaseException:
                for pool in pools.values():
                    pool.shutdown()
                persistence.stop()
                self._persistence_dispatcher.shutdown()
                raise
        self._runtime = Runtime(
            world_id=self.id,
            storage=self.storage,
            dispatcher=Dispatcher(DISPATCHER_THREADS, name=f"pydynflow-actors-{self.id[:8]}"),
            persistence=persistence,
            pools=pools,
            auto_rescue=self.auto_rescue,
            max_recoveries=self.max_recoveries,
            world=self,
            clock=self.clock if self.clock is not None else RealClock(),
            processes=processes,
            middleware=self.middleware,
        )
        if self.executor:
            self._executor = ExecutorActor.start(
                self._runtime, _dispatcher=self._runtime.dispatcher
            )

    def stop(self, timeout: float | None = None) -> list[tuple[str, int]]:
        """Stop gracefully: take no new work at once, let running steps finish (up to
        ``timeout`` seconds), pause the plans that were running, commit everything, close
        the store.

        ``timeout`` None means the world's ``stop_timeout`` (None by default: as long as
        the steps run). Steps waiting for a worker are not started; suspended steps stay
        suspended. Returns ``(plan id, step id)`` of the steps whose code was still running
        when the timeout ran out (logged too): they are stored ``running`` and come back
        "Abnormal termination" to their policies when an executor world starts next.
        Execution-plan hooks still queued then run before it returns (for up to ``timeout``
        more; those left are dropped and logged).
        Idempotent: stopping a stopped world does nothing (and returns ``[]``).
        """
        if timeout is None:
            timeout = self.stop_timeout
        with self._lock:
            if self._stopped:
                if self.fatal_error is not None:
                    self.storage.close()  # what the fatal stop left to its owner
                return []
            self._stopped = True
            runtime, self._runtime = self._runtime, None
        try:
            return self._wind_down(runtime, timeout)
        finally:
            self._wake_runners()

    def _wind_down(self, runtime: Runtime | None, timeout: float | None) -> list[tuple[str, int]]:
        left: list[tuple[str, int]] = []
        self._stop_dispatch()
        if runtime is not None:
            if self._executor is not None:
                done: Promise[bool] = Promise()
                self._executor.tell(Terminate(done))
                if not self._wait_terminated(done, timeout):
                    left = runtime.running_steps()
                    self.log.warning(
                        "steps still running at stop: stored running, to be recovered",
                        timeout=timeout,
                        steps=[f"{plan_id}/{step_id}" for plan_id, step_id in left],
                    )
            runtime.persistence.ask(Sync())
            runtime.persistence.stop()
            self._persistence_dispatcher.shutdown()
            for pool in runtime.pools.values():
                pool.shutdown(wait=not left)
            runtime.dispatcher.shutdown(wait=not left)
            runtime.close_loop()
            runtime.close_callbacks()
            if self.clock is None:  # ours, not the caller's
                runtime.clock.close()
        # Every commit is acknowledged: the hooks of its transitions are all queued.
        self._hooks.stop(0 if self._hurry else timeout)
        if runtime is not None:
            with contextlib.suppress(PersistenceError):  # its heartbeat stops: it dies anyway
                if self.executor and not self.storage.in_memory:
                    self._hand_over_paused()
                self._registry.deregister()
        if self._world_lock is not None:
            self._world_lock.release()
        self.storage.close()
        self.log.info("world stopped")
        return left

    def _hand_over_paused(self) -> None:
        """Ask any executor world to continue the plans this stop paused (requests that
        stay stored until one reads them; a plan run meanwhile makes them no-ops)."""
        handed = [
            plan.id
            for plan in self.storage.find_plans(state="paused", limit=None)
            if plan.history
            and plan.history[-1].world_id == self.id
            and plan.pause_reason() == "stop"
        ]
        if handed:
            request = {"kind": "execute", "mode": "continue", "quiet": True}
            self.storage.post_requests(
                (ANY_EXECUTOR, {**request, "plan_id": plan_id}) for plan_id in handed
            )
            self.log.info("handed the plans this stop paused to other executors", plans=handed)

    def _stop_dispatch(self) -> None:
        dispatch, self._dispatch = self._dispatch, None
        if dispatch is not None:
            dispatch.stop()
        self._client.fail_all(DynflowError(f"{self!r} stopped"))

    def _wait_terminated(self, done: Promise[bool], timeout: float | None) -> bool:
        """Wait up to ``timeout`` for the executor to wind down; `_stop_now` cuts it short."""
        finished = threading.Event()
        with self._lock:
            if self._hurry:
                timeout = 0
            self._stop_waiting = finished
        done.add_done_callback(lambda _: finished.set())
        finished.wait(timeout)
        return done.done()

    def _stop_now(self) -> None:
        """Make a stop in progress (or the next one) give up waiting for running steps."""
        with self._lock:
            self._hurry = True
            waiting = self._stop_waiting
        if waiting is not None:
            waiting.set()
        self._hooks.hurry()

    def run_forever(
        self, stop_timeout: float | None = 30.0, install_signal_handlers: bool = True
    ) -> int:
        """Run until SIGTERM or SIGINT, then stop gracefully; return the process's exit status.

        Installs its signal handlers, starts the world if needed (a signal during the start
        stops it right after) and blocks until a SIGTERM or SIGINT arrives, or until the
        world stops otherwise (`stop` from another thread, or on its own when its
        database cannot be written: `fatal_error`). Then it stops the world, letting
        running steps finish for up to ``stop_timeout`` seconds (None: the world's
        ``stop_timeout``). A second signal during that stop stops at once, as
        ``stop(timeout=0)`` does: the steps still running are stored ``running`` and come
        back "Abnormal termination" when an executor world starts next.

        Signal handlers are installed only from the main thread (and only with
        ``install_signal_handlers``); the previous ones are restored on return. A daemon
        ends with ``sys.exit(world.run_forever())``.

        Returns:
            0 after a graceful stop, 1 if the world stopped because of `fatal_error`.
        """
        wakeup = _Wakeup()
        signals: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:  # no lock here: a pipe write only
            signals.append(signum)
            wakeup.set()

        previous: dict[int, Any] = {}
        previous_wakeup_fd: int | None = None
        with self._lock:
            self._wakeups.append(wakeup)
        try:
            if install_signal_handlers and threading.current_thread() is threading.main_thread():
                # A signal may land on any thread: the wake-up fd wakes this one at once
                # (the handler itself runs only here, once this thread runs Python again).
                previous_wakeup_fd = signal.set_wakeup_fd(
                    wakeup.write_fd, warn_on_full_buffer=False
                )
                for handled in (signal.SIGTERM, signal.SIGINT):
                    previous[handled] = signal.signal(handled, on_signal)
            self.start()
            while not signals and not self._halted:
                wakeup.wait()
            if signals:
                self.log.info(
                    "signal received: stopping",
                    signal=signal.Signals(signals[0]).name,
                    timeout=stop_timeout,
                )
            self._stop_in_thread(stop_timeout, wakeup, signals)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if previous_wakeup_fd is not None:
                signal.set_wakeup_fd(previous_wakeup_fd)
            with self._lock:
                self._wakeups.remove(wakeup)
            wakeup.close()
        return 1 if self.fatal_error is not None else 0

    def _stop_in_thread(self, timeout: float | None, wakeup: _Wakeup, signals: list[int]) -> None:
        """Stop on a thread of its own while this one watches for a second signal."""
        failed: list[BaseException] = []
        returned: list[bool] = []

        def stop() -> None:
            try:
                self.stop(timeout)
            except BaseException as exc:  # re-raised in the caller's thread below
                failed.append(exc)
            finally:
                returned.append(True)
                wakeup.set()

        seen = min(len(signals), 1)  # the first signal asked for this stop; more hurry it
        stopper = threading.Thread(target=stop, name="pydynflow-stop")
        stopper.start()
        while not returned or not self._halted:  # or another thread's stop is running
            # Look before waiting: two signals that came together woke this world once.
            if len(signals) > seen:
                seen = len(signals)
                self.log.warning("second signal: stopping now, running steps left running")
                self._stop_now()
            wakeup.wait()
        stopper.join()
        if failed:
            raise failed[0]

    def _wake_runners(self) -> None:
        """The world has stopped: wake `run_forever`."""
        with self._lock:
            self._halted = True
            wakeups = list(self._wakeups)
        for wakeup in wakeups:
            wakeup.set()

    def _persistence_lost(self, error: BaseException) -> None:
        """The writer gave up (`fatal_persistence_timeout`): stop the world at once.

        Called on the writer's reply thread, which must not wait: the stop runs on a thread
        of its own. Nothing more can be stored; plans stay as stored (running ones are
        recovered when an executor world starts next).
        """
        if self.fatal_error is None:
            self.fatal_error = error
        self.log.critical(
            "persistence failed for good: the world stops",
            error=str(error),
            timeout=self.fatal_persistence_timeout,
        )
        threading.Thread(
            target=self._stop_fatally, args=(error,), name="pydynflow-fatal", daemon=True
        ).start()

    def _stop_fatally(self, error: BaseException) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            runtime, self._runtime = self._runtime, None
        try:
            if runtime is not None:
                self._abandon(runtime, error)
        finally:
            self._wake_runners()

    def _abandon(self, runtime: Runtime, error: BaseException) -> None:
        self._stop_dispatch()
        if self._executor is not None:
            self._executor.tell(Abandon(error))
        runtime.persistence.stop(block=False)
        self._persistence_dispatcher.shutdown(wait=False)
        for pool in runtime.pools.values():
            pool.shutdown(wait=False)
        runtime.dispatcher.shutdown(wait=False)
        runtime.close_loop()
        runtime.close_callbacks()
        if self.clock is None:
            runtime.clock.close()
        self._hooks.stop(0)
        if self._world_lock is not None:
            self._world_lock.release()
        self.log.info("world stopped", fatal=True)

    def _require_runtime(self, what: str) -> Runtime:
        runtime = self._runtime
        if runtime is None:
            if self.fatal_error is not None:
                raise PersistenceError(
                    f"{what}: {self!r} stopped because its database could not be written "
                    f"for {self.fatal_persistence_timeout:g} s: {self.fatal_error}"
                )
            state = "stopped" if self._stopped else "not started"
            raise DynflowError(f"{what} needs a started world; {self!r} is {state}")
        return runtime

    def _require_executor(self, what: str) -> Any:
        self._require_runtime(what)
        return self._executor

    def _require_remote(self, what: str, *, live_executor: bool = True) -> None:
        """Check that this client world can reach an executor world through the database
        (``live_executor``: one is alive now)."""
        self._require_runtime(what)
        if self._dispatch is None:
            raise DynflowError(
                f"{what} from a client world needs a database other processes share; "
                f"{self!r} is in memory: use an executor world"
            )
        if live_executor and not self._registry.live_executors():
            raise DynflowError(
                f"{what}: no executor world is alive on {redact_url(self.db)}; start one "
                "(World(db) or `pydynflow worker`) and try again"
            )

    # -- planning ------------------------------------------------------------------------

    def plan(self, action_class: type[Action], *args: Any, **kwargs: Any) -> ExecutionPlan:
        """Plan ``action_class(*args, **kwargs)`` and store the plan.

        Returns the plan ``planned``, or ``stopped`` with result ``error`` if planning failed
        (the failing plan steps hold the error).
        """
        return self.plan_with_options(action_class, args=args, kwargs=kwargs)

    def plan_with_options(
        self,
        action_class: type[Action],
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        id: str | None = None,
        caller_action: Action | None = None,
    ) -> ExecutionPlan:
        """Plan with options: a custom plan ``id`` and/or the ``caller_action`` of a sub-plan.

        The plan is committed before this returns.
        """
        if id is not None and self.storage.plan_exists(id):
            raise PlanningError(f"an execution plan with id {id} already exists")
        plan = self._plan(action_class, args, kwargs, id, caller_action)
        self._save(plan, new=True, steps=plan.steps.values(), actions=plan.actions.values())
        return plan

    def _plan(
        self,
        action_class: type[Action],
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        plan_id: str | None = None,
        caller_action: Action | None = None,
    ) -> ExecutionPlan:
        plan = Planner.new_plan(action_class, plan_id)
        caller = None
        if caller_action is not None:
            caller = (caller_action.execution_plan_id, caller_action.id)
        subscriptions = self.subscribed_actions
        if type(self).subscribed_actions is World.subscribed_actions:
            subscriptions = subscribed_actions  # the same, one call less per planned action
        storage, world_id = self.storage, self.id
        planner = Planner(
            plan,
            world_id=world_id,
            subscriptions=subscriptions,
            singleton_lock=lambda name, plan_id: take_singleton_lock(
                storage, name, plan_id, world_id
            ),
            middleware=self.middleware.stack,
        )
        plan.world = self  # for the plan_phase middleware
        planner.plan_root(action_class, tuple(args), dict(kwargs or {}), caller=caller)
        return plan

    def subscribed_actions(self, action_class: type[Action]) -> list[type[Action]]:
        """Return the action classes planned whenever ``action_class`` is planned.

        They are the registered classes whose ``subscribe`` names it: those of the user's
        imports and of installed plugins (loaded when the world was created).
        """
        return subscribed_actions(action_class)

    # -- execution -----------------------------------------------------------------------

    def trigger(self, action_class: type[Action], *args: Any, **kwargs: Any) -> Triggered:
        """Plan ``action_class(*args, **kwargs)`` and execute it.

        Returns at once with the plan committed; ``.wait()`` for the end of the execution.
        If planning failed, ``.planned`` is False and ``.error`` says why. A client world
        plans here and hands the plan to an executor world through the database.
        """
        if not self.executor:
            return self._trigger_elsewhere(action_class, args, kwargs)
        executor = self._require_executor("trigger")
        plan = self._plan(action_class, args, kwargs)
        future: Promise[ExecutionPlan] = Promise()
        if plan.state != PlanState.PLANNED:
            self._save(plan, new=True, steps=plan.steps.values(), actions=plan.actions.values())
            future.set_result(plan)
            return Triggered(
                plan.id, future, planned=False, error=plan.error, present=self._present_shared
            )
        # One transaction stores the plan and starts it; return once it is committed. The
        # executor takes the plan on this thread if it is idle (its turn starts the plan's
        # supervisor and sends that transaction), instead of a dispatcher thread being woken.
        stored: Promise[None] = Promise()
        tell_and_run(executor, ExecutePlan(plan.id, plan, future, stored))
        stored.result()
        return Triggered(plan.id, future, present=self._present_shared)

    def _trigger_elsewhere(
        self, action_class: type[Action], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Triggered:
        """Plan here, store the plan, and have an executor world execute it; with none
        alive, the plan waits ``planned`` (the request stays stored for the next one)."""
        self._require_remote("trigger", live_executor=False)
        plan = self._plan(action_class, args, kwargs)
        self._save(plan, new=True, steps=plan.steps.values(), actions=plan.actions.values())
        if plan.state != PlanState.PLANNED:
            future: Promise[ExecutionPlan] = Promise()
            future.set_result(plan)
            return Triggered(
                plan.id, future, planned=False, error=plan.error, present=self._present_shared
            )
        note = self._operator("trigger")
        # Quiet: an executor that starts now may run the plan first (auto_execute); that
        # the request then finds it running or done is no error for this caller.
        if self._registry.live_executors():
            return self._execute(plan.id, None, "resume", note, call="execute", quiet=True)
        self.log.warning("no executor world is alive: the plan waits planned", plan_id=plan.id)
        future = self._client.wait_plan(plan.id)
        self._client.post("execute", plan_id=plan.id, note=note, quiet=True)
        return Triggered(plan.id, future)

    def execute(self, plan_id: str, *, by: str | None = None) -> Triggered:
        """Execute a ``planned`` or ``paused`` plan (a paused one: as `resume` does);
        ``.wait()`` raises if it cannot run. ``by``: who asked, for the plan's history
        (default: this process's operating-system user)."""
        return self._execute(plan_id, None, "resume", self._operator("execute", by))

    def resume(self, plan_id: str, *, by: str | None = None) -> Triggered:
        """Run a paused plan again: its failed steps (with a fresh set of `Retry`
        attempts), then its finalize phase from its start. ``by``: who asked, for the
        plan's history (default: this process's operating-system user)."""
        note = self._operator("resume", by)
        return self._execute(plan_id, None, "resume", note, call="resume")

    def _execute(
        self,
        plan_id: str,
        plan: ExecutionPlan | None,
        mode: str,
        note: dict[str, Any] | None = None,
        call: str = "execute",
        quiet: bool = False,
    ) -> Triggered:
        if not self.executor:
            self._require_remote(call)
            future = self._client.wait_plan(plan_id)
            try:
                self._client.call(call, plan_id=plan_id, note=note, quiet=quiet)
            except BaseException as exc:
                self._client.fail_wait(plan_id, future, exc)
                raise
            return Triggered(plan_id, future)
        executor = self._require_executor(call)
        future = Promise()
        executor.tell(ExecutePlan(plan_id, plan, future, mode=mode, note=note))
        return Triggered(plan_id, future, present=self._present_shared)

    def _operator(self, call: str, by: str | None = None) -> dict[str, Any]:
        """Return who asked for an operator action, for the plan's history."""
        user = by if by is not None else _user()
        return {"call": call, "world": self.name, "host": socket.gethostname(), "user": user}

    def skip(self, plan_id: str, step_id: int, *, by: str | None = None) -> None:
        """Mark a failed run step of a paused plan skipped; `resume` the plan to go on.

        The step, every step whose input references it (transitively) and their actions'
        finalize steps are marked skipped; the plan stays ``paused`` until `resume` runs it
        again, without them, and its result will be ``warning``. ``by``: who asked, for the
        plan's history (default: this process's operating-system user).
        """
        note = self._operator("skip", by)
        if not self.executor and self._dispatch is not None:  # through the executor world
            self._require_remote("skip")
            self._client.call("skip", plan_id=plan_id, step_id=step_id, note=note)
            return
        self._skip(plan_id, step_id, note)

    def _skip(self, plan_id: str, step_id: int, note: dict[str, Any] | None) -> None:
        plan = self._stored(plan_id)
        if plan.state != PlanState.PAUSED:
            raise DynflowError(f"execution plan {plan_id} has to be paused to skip a step")
        step = plan.steps.get(step_id)
        if step is None:
            raise UnknownStep(f"execution plan {plan_id} has no step {step_id}")
        if step.state != StepState.ERROR or step.phase != Phase.RUN:
            raise DynflowError(f"step {step_id} has to be a failed run step to be skipped")
        changed = skip_plan_steps(plan, step)
        plan.note("skip", self.id, {**(note or {}), "step_id": step_id})
        self._save(plan, steps=changed)

    def event(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        optional: bool = False,
        event_id: str | None = None,
    ) -> bool:
        """Send ``payload`` to a step waiting for events (suspended, or running: queued).

        Returns once the event is stored (a crash cannot lose it): True if accepted.
        ``event_id``: an id the sender chooses (a web hook's delivery id, say); the same id
        again for the same step returns True and is not applied again, even once the step
        has ended.

        Raises:
            UnknownPlan: no plan has this id.
            UnknownStep: the plan has no step with this id.
            EventRejected: the step is not waiting for events (with ``optional``: return
                False instead).
            SerializationError: ``payload`` is not JSON-serialisable.
        """
        if event_id is not None and not isinstance(event_id, str):
            raise TypeError(f"event_id must be a str, got {type(event_id).__name__}")
        payload = normalize_event(payload)
        return self._event(plan_id, step_id, payload, optional, event_id, forward=True)

    def _event(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        optional: bool,
        event_id: str | None = None,
        *,
        forward: bool,
    ) -> bool:
        """`event`; ``forward``: to the world running the plan if it is another one (not
        when applying another world's request: that would wait on this world's own
        dispatch thread)."""
        if not self.executor:
            self._require_remote("event")
            self._check_step(plan_id, step_id)
            accepted = self._client.call(
                "event",
                inbox=self._inbox_of(plan_id),
                plan_id=plan_id,
                step_id=step_id,
                payload=payload,
                optional=optional,
                event_id=event_id,
            )
            return bool(accepted)
        executor = self._require_executor("event")
        reply: Promise[bool] = Promise()
        executor.tell(DeliverEvent(plan_id, step_id, payload, optional, reply, event_id))
        try:
            return reply.result()
        except NotRunningHere:  # only now ask the store why (not on every event)
            self._check_step(plan_id, step_id)
            owner = self._other_owner(plan_id) if forward else None
            if owner is not None:
                return bool(
                    self._client.call(
                        "event",
                        inbox=world_inbox(owner),
                        plan_id=plan_id,
                        step_id=step_id,
                        payload=payload,
                        optional=optional,
                        event_id=event_id,
                    )
                )
            if event_id is not None and (step_id, event_id) in self.storage.chosen_event_ids(
                plan_id
            ):
                return True  # applied before
            if self._keep_for_later(plan_id, step_id, payload, event_id):
                return True
            if optional:
                return False
            state = self.storage.step_state(plan_id, step_id)
            raise EventRejected(
                f"step {step_id} of execution plan {plan_id} is {state}, and the plan is not "
                "running in this world: not waiting for events"
            ) from None

    def cancel(self, plan_id: str, force: bool = False, *, by: str | None = None) -> int:
        """Ask every running or suspended `Cancellable` step of a plan to cancel.

        Sends `Cancel` (``force``: `Abort`); returns how many steps were asked (0: nothing
        could be cancelled). A plan that runs notes who asked in its history (``by``,
        default: this process's operating-system user).
        """
        note = {**self._operator("cancel", by), "force": force}
        return self._cancel(plan_id, force, note, forward=True)

    def _cancel(
        self, plan_id: str, force: bool, note: dict[str, Any] | None, *, forward: bool
    ) -> int:
        self._check_step(plan_id, None)
        if not self.executor:
            self._require_remote("cancel")
            inbox = self._inbox_of(plan_id)
            asked = self._client.call(
                "cancel", inbox=inbox, plan_id=plan_id, force=force, note=note
            )
            return int(asked)
        executor = self._require_executor("cancel")
        reply: Promise[int] = Promise()
        executor.tell(CancelPlan(plan_id, force, reply, note))
        asked = reply.result()
        owner = self._other_owner(plan_id) if forward and not asked else None
        if owner is not None:
            inbox = world_inbox(owner)
            asked = self._client.call(
                "cancel", inbox=inbox, plan_id=plan_id, force=force, note=note
            )
        return int(asked)

    def halt(self, plan_id: str, *, by: str | None = None) -> None:
        """Stop a plan: running steps finish their current call, suspended steps stay
        suspended, nothing new starts, and the plan ends ``stopped``. Its history notes
        who asked (``by``, default: this process's operating-system user)."""
        self._halt(plan_id, self._operator("halt", by), forward=True)

    def _halt(self, plan_id: str, note: dict[str, Any] | None, *, forward: bool) -> None:
        self._check_step(plan_id, None)
        if not self.executor:
            self._require_remote("halt")
            inbox = self._inbox_of(plan_id)
            self._client.call("halt", inbox=inbox, plan_id=plan_id, note=note)
            return
        executor = self._require_executor("halt")
        reply: Promise[bool] = Promise()
        executor.tell(HaltPlan(plan_id, reply, note))
        if reply.result():
            return  # its supervisor stops it
        owner = self._other_owner(plan_id) if forward else None
        if owner is not None:
            self._client.call("halt", inbox=world_inbox(owner), plan_id=plan_id, note=note)
            return
        plan = self._stored(plan_id)  # not running here: stop it where it stands
        if plan.state != PlanState.STOPPED:
            if note is not None:
                plan.note("halt", self.id, note)
            plan.transition(PlanState.STOPPED, self.id)
            self._save(plan)

    def _keep_for_later(
        self, plan_id: str, step_id: int, payload: Any, event_id: str | None
    ) -> bool:
        """Store an event for a run step of a plan that runs nowhere (``planned``, or
        ``paused``) and can still take it; its next execution delivers it. Return whether
        it was stored."""
        try:
            plan = self._stored(plan_id)
        except UnknownPlan:
            return False
        step = plan.steps.get(step_id)
        if step is None or step.phase != Phase.RUN or step.state not in _KEEPS_EVENTS:
            return False
        chosen = event_id is not None
        stored_id = event_id if event_id is not None else uuid.uuid4().hex
        return self.storage.keep_event(plan_id, step_id, encode_event(payload), stored_id, chosen)

    def _other_owner(self, plan_id: str) -> str | None:
        """Return the other registered world running ``plan_id``, if any (and this world
        can reach it: not in memory)."""
        if self._dispatch is None:
            return None
        owner = self.storage.executing_world(plan_id)
        if owner is None or owner == self.id:
            return None
        registered = {record["id"] for record in self.storage.world_records()}
        return owner if owner in registered else None

    def _inbox_of(self, plan_id: str) -> str:
        """Return where a request about ``plan_id`` goes: the world running it, or any
        executor."""
        owner = self._other_owner(plan_id)
        return world_inbox(owner) if owner is not None else ANY_EXECUTOR

    def _check_step(self, plan_id: str, step_id: int | None) -> None:
        state = self.storage.step_state(plan_id, step_id)
        if state is None:
            if step_id is None or not self.storage.plan_exists(plan_id):
                raise UnknownPlan(f"no execution plan has id {plan_id}")
            raise UnknownStep(f"execution plan {plan_id} has no step {step_id}")

    def _save(
        self,
        plan: ExecutionPlan,
        *,
        new: bool = False,
        steps: Iterable[Step] = (),
        actions: Iterable[ActionRecord] = (),
    ) -> None:
        """Commit changes to ``plan``: its row, and the given steps and actions.

        ``new``: the plan was never stored (written whole). Through the persistence actor
        when the world runs, else in a transaction of this thread; either way the same
        change set (`changes`), so that nothing is written that did not change.
        """
        message = changes(self.storage, plan=plan, new=new, steps=steps, actions=actions)
        runtime = self._runtime
        if runtime is None:  # not started: write directly, on this thread
            ThreadWriter(self.storage).write([request_of(message)])
            if message.hooks is not None:
                self._hooks.submit(message.hooks)
            return
        persist_and_wait(runtime.persistence, message)

    def _recover(self, invalidator: Invalidator) -> None:
        """Recover what dead worlds left; continue what a stop or a crash interrupted.

        Runs once, when an executor world starts, after the dead worlds were invalidated:
        the running plans of worlds without a record are recovered (one live world takes
        each), then with ``auto_execute`` planned plans and interrupted paused ones are
        executed (a claim decides which executor runs each). Plans paused for a person are
        listed in one log line.
        """
        invalidator.recover_orphans(self._recover_orphan)
        waiting: list[str] = []
        for plan in self.storage.find_plans(state=["planned", "paused"], limit=None):
            if not plan.valid:
                waiting.append(plan.id)
            elif plan.state == PlanState.PLANNED or _interrupted(plan):
                if self.auto_execute:
                    self.auto_executed.append(self._execute(plan.id, plan, "continue"))
            else:
                waiting.append(plan.id)
        if waiting:
            self.log.warning(
                "plans paused for a person (resume or skip them)",
                count=len(waiting),
                plan_ids=waiting,
            )

    # -- worlds --------------------------------------------------------------------------

    def worlds(self) -> list[WorldInfo]:
        """List the worlds registered in the database (this one too), oldest first.

        ``alive`` says whether a world's last heartbeat is younger than this world's
        ``validity_timeout``.
        """
        return self._registry.worlds()

    def invalidate(self, world_id: str) -> bool:
        """Do to a dead world what its death should have: remove its record and its inboxes.

        Its unapplied requests go back to every executor. An executor world continues the
        plans the dead world ran (their running steps "Abnormal termination", then their
        policies); a client world leaves them to the executor worlds, which take them over
        on their next heartbeat. Returns whether the record existed.

        Raises:
            ValueError: ``world_id`` is this world's own id.
        """
        if self._invalidator is not None:
            return self._invalidator.invalidate(world_id)
        removed = self._registry.invalidate(world_id)
        if removed:
            self.log.warning("invalidated a world on request", invalidated_world_id=world_id)
        return removed

    # -- reading -------------------------------------------------------------------------

    def load(self, plan_id: str) -> ExecutionPlan:
        """Load an execution plan; raise `UnknownPlan` if there is none with that id.

        What it shows has been through the ``present`` middleware of its actions.
        """
        return present_plan(self._stored(plan_id), self.middleware.stack)

    def _stored(self, plan_id: str) -> ExecutionPlan:
        """Load an execution plan as stored (not presented): to change it."""
        plan = self.storage.load_plan(plan_id)
        plan.world = self
        return plan

    def _present_shared(self, plan: ExecutionPlan) -> ExecutionPlan:
        """Return ``plan`` (the executor's) presented to a reader, as a copy if it changes."""
        return present_plan(plan, self.middleware.stack, shared=True)

    def plans(
        self,
        state: str | Sequence[str] | None = None,
        result: str | Sequence[str] | None = None,
        label: str | Sequence[str] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        order_by: str = "started_at",
        desc: bool = True,
    ) -> list[ExecutionPlan]:
        """List execution plans, filtered, ordered and paged (presented, as `load` does)."""
        found = self.storage.find_plans(
            state=state,
            result=result,
            label=label,
            limit=limit,
            offset=offset,
            order_by=order_by,
            desc=desc,
        )
        stack = self.middleware.stack
        for plan in found:
            plan.world = self
        return [present_plan(plan, stack) for plan in found]

    def __repr__(self) -> str:
        return f"<World {self.name} id={self.id[:8]} db={self.db}>"


class _Wakeup:
    """A self-pipe: `set` from any thread or a signal handler (it takes no lock), `wait` in
    one thread. (A `threading.Event` set from a signal handler can deadlock the thread the
    handler interrupted while it held the event's lock.)"""

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self.write_fd, b"!")

    def wait(self, timeout: float | None = None) -> None:
        ready, _, _ = select.select([self._read], [], [], timeout)
        if ready:
            os.read(self._read, 4096)

    def close(self) -> None:
        os.close(self._read)
        os.close(self.write_fd)


_KEEPS_EVENTS = (StepState.PENDING, StepState.SUSPENDED, StepState.ERROR, StepState.RUNNING)
"""The states in which a step of a plan that runs nowhere can still take an event (a
failed one runs again on resume; a running one was left by a world that died)."""


def _interrupted(plan: ExecutionPlan) -> bool:
    """Return whether a paused plan was interrupted (a stop, a crash) rather than paused
    for a person; a plan paused before reasons were recorded counts if it has no error."""
    reason = plan.pause_reason()
    if reason is None:
        return plan.result != Result.ERROR
    return reason in ("stop", "crash")


def _user() -> str:
    """Return the operating-system user of this process (for operator history entries)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def normalize_event(payload: Any) -> Any:
    """Return ``payload`` checked for storage: an engine event or JSON-shaped data."""
    if isinstance(payload, EngineEvent):
        return payload
    return normalize(payload, owner="World.event", field="event")
