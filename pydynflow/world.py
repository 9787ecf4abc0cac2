"""`World`: storage, configuration and the API of a process (one module: one public class).

A world is the universe a process runs pydynflow in. It plans actions into execution plans,
stores them, and (with an executor) runs them on its actor system. Reads (`World.load`,
`World.plans`) go straight to storage. Every operation a user calls is a method of `World`,
so this module is long.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from pydynflow.action import Action
from pydynflow.actors.executor import ExecutorActor
from pydynflow.actors.hook_runner import HookRunner
from pydynflow.actors.messages import (
    Abandon,
    Claim,
    ExecutePlan,
    Terminate,
)
from pydynflow.actors.persistence import (
    ClaimRefused,
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
    WorldRegistry,
)
from pydynflow.dispatch.operations import OperationsMixin
from pydynflow.dispatch.sharing import SharingMixin
from pydynflow.errors import (
    DynflowError,
    PersistenceError,
    PlanningError,
)
from pydynflow.logging import configure_logging, get_logger
from pydynflow.middleware import Spec, WorldMiddleware, present_plan
from pydynflow.mixins.sub_plans import wake_caller
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.planning import Planner
from pydynflow.plugins import load_plugins
from pydynflow.promise import Promise
from pydynflow.registry import subscribed_actions
from pydynflow.retention import CLEANER_INTERVAL, RetentionMixin, retention_settings
from pydynflow.scheduling import POLL_INTERVAL, SchedulingMixin
from pydynflow.states import PlanState
from pydynflow.storage import Storage
from pydynflow.storage.singleton_lock import take_singleton_lock
from pydynflow.storage.world_lock import WorldLock
from pydynflow.storage.writer import ThreadWriter
from pydynflow.triggered import Triggered
from pydynflow.world_service import ServiceMixin, Wakeup

DEFAULT_DB = "sqlite:///pydynflow.db"
DISPATCHER_THREADS = 2  # actor code is short and CPU-bound: more threads only fight the GIL


class World(OperationsMixin, SchedulingMixin, SharingMixin, ServiceMixin, RetentionMixin):
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
        delayed_executor: an executor world may be the database's delayed executor, which
            plans and runs delayed and chained plans (`delay`, `chain`) when they are due:
            one world holds its lock at a time, another takes it over once that world is
            dead or stopped. False: never this one. Ignored by client worlds.
        delayed_poll_interval: seconds of the world's clock between two looks of the
            delayed executor for due plans (a plan delayed in this world is also looked at
            when it falls due; one delayed elsewhere may wait up to this long).
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
        keep_plans_for: run a plan cleaner (executor worlds only; off by default): at the
            start and every ``cleaner_interval`` seconds of the clock, delete the stopped
            plans that ended longer ago than this timedelta (see `delete_plans`).
        cleaner_interval: seconds (or a timedelta) between two runs of the plan cleaner.
        cleaner_backup: a JSON-lines file the plan cleaner appends the plans it deletes to.
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
        delayed_executor: bool = True,
        delayed_poll_interval: float = POLL_INTERVAL,
        name: str | None = None,
        clock: Any = None,
        max_recoveries: int = 3,
        fatal_persistence_timeout: float = 60.0,
        stop_timeout: float | None = None,
        create: bool | None = None,
        validity_timeout: float = 30.0,
        heartbeat: float = 5.0,
        plugins: bool = True,
        keep_plans_for: timedelta | None = None,
        cleaner_interval: float | timedelta = CLEANER_INTERVAL,
        cleaner_backup: str | os.PathLike[str] | None = None,
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
        if not isinstance(delayed_poll_interval, int | float) or not delayed_poll_interval > 0:
            raise ValueError(
                "delayed_poll_interval must be a positive number of seconds, "
                f"got {delayed_poll_interval!r}"
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
        self.delayed_executor = bool(delayed_executor)
        self.delayed_poll_interval = float(delayed_poll_interval)
        self.clock = clock
        self.max_recoveries = max_recoveries
        self.fatal_persistence_timeout = float(fatal_persistence_timeout)
        self.stop_timeout = stop_timeout
        self.validity_timeout = float(validity_timeout)
        self.heartbeat = float(heartbeat)
        self.plugins = plugins
        self.keep_plans_for, self.cleaner_interval, self.cleaner_backup = retention_settings(
            keep_plans_for, cleaner_interval, cleaner_backup
        )
        self.fatal_error: BaseException | None = None
        """Why the world stopped on its own (persistence gone for good), or None."""
        self.storage = Storage(db, create=bool(executor) if create is None else create)
        self.log = get_logger(world_id=self.id, world=self.name)
        self._lock = threading.Lock()
        # Its thread starts with the first hook (or the first sub-plan that ends).
        self._hooks = HookRunner(self.log, on_sub_plan_end=functools.partial(wake_caller, self))
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
        # (when, queues that other live executor worlds serve): read at most once a second
        self._others_checked: tuple[float, dict[str, bool]] = (float("-inf"), {})
        self._stopped = False
        self._halted = False  # the stop (or the fatal stop) is over
        self._wakeups: list[Wakeup] = []  # `run_forever` calls waiting for the world's end
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
        self._start_delayed_executor()
        self._start_cleaner()
        return self

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
        self._stop_delayed_executor()  # first: it hands plans to the executor
        self._stop_cleaner()
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
        self._stop_delayed_executor(wait=False)
        self._stop_cleaner(wait=False)
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
        return self.trigger_with_caller(action_class, args, kwargs)

    def trigger_with_caller(
        self,
        action_class: type[Action],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        caller_action: Action | None = None,
    ) -> Triggered:
        """`trigger` with the ``caller_action`` whose sub-plan this is (None: a plain
        trigger); `WithSubPlans.trigger_sub_plan` calls it."""
        kwargs = kwargs or {}
        if not self.executor:
            return self._trigger_elsewhere(action_class, args, kwargs, caller_action)
        if caller_action is not None and self._other_executors(
            getattr(action_class, "queue", "default")
        ):
            return self._trigger_for_any(action_class, args, kwargs, caller_action)
        executor = self._require_executor("trigger")
        plan = self._plan(action_class, args, kwargs, caller_action=caller_action)
        if plan.state != PlanState.PLANNED:
            return self._not_planned(plan)
        future: Promise[ExecutionPlan] = Promise()
        # One transaction stores the plan and starts it; return once it is committed. The
        # executor takes the plan on this thread if it is idle (its turn starts the plan's
        # supervisor and sends that transaction), instead of a dispatcher thread being woken.
        stored: Promise[None] = Promise()
        tell_and_run(executor, ExecutePlan(plan.id, plan, future, stored))
        stored.result()
        return Triggered(plan.id, future, present=self._present_shared)

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
        inbox: str | None = None,
        store: Callable[[str, dict[str, Any]], object] | None = None,
    ) -> Triggered:
        if not self.executor:
            self._require_remote(call)
            if inbox is None:
                inbox = self._execution_inbox(plan_id)
            future = self._client.wait_plan(plan_id)
            try:
                self._client.call(
                    call, inbox=inbox, store=store, plan_id=plan_id, note=note, quiet=quiet
                )
            except BaseException as exc:
                self._client.fail_wait(plan_id, future, exc)
                raise
            return Triggered(plan_id, future)
        executor = self._require_executor(call)
        future = Promise()
        executor.tell(ExecutePlan(plan_id, plan, future, mode=mode, note=note))
        return Triggered(plan_id, future, present=self._present_shared)

    def _save(
        self,
        plan: ExecutionPlan,
        *,
        new: bool = False,
        steps: Iterable[Step] = (),
        actions: Iterable[ActionRecord] = (),
        posts: tuple[tuple[str, dict[str, Any]], ...] = (),
        claim: Claim | None = None,
    ) -> None:
        """Commit changes to ``plan``: its row, and the given steps and actions, with the
        requests for other worlds of ``posts`` (``(inbox, request)``); only if ``claim``
        holds, if given (else `ClaimRefused` is raised and nothing is written).

        ``new``: the plan was never stored (written whole). Through the persistence actor
        when the world runs, else in a transaction of this thread; either way the same
        change set (`changes`), so that nothing is written that did not change.
        """
        message = changes(
            self.storage,
            plan=plan,
            new=new,
            steps=steps,
            actions=actions,
            posts=posts,
            claim=claim,
        )
        runtime = self._runtime
        if runtime is None:  # not started: write directly, on this thread
            if ThreadWriter(self.storage).write([request_of(message)]):
                assert claim is not None
                raise ClaimRefused(
                    f"execution plan {claim.plan_id} is not in {'/'.join(claim.from_states)}"
                )
            if message.hooks is not None:
                self._hooks.submit(message.hooks)
            return
        persist_and_wait(runtime.persistence, message)

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
