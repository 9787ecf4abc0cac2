"""`PlanExecution`: a plan's next move, decided without threads (one module: one state machine).

Two drivers run plans: the plan supervisor actor (`pydynflow.actors.plan_supervisor`) and the
testing world (`pydynflow.testing.InThreadWorld`). Both drive this core, as Dynflow's
``Director`` is driven by its executors: they tell it what happened (a worker was granted to
a step, a step's code returned, an event was accepted, a retry's backoff is over, the
finalize phase ran) and it changes the plan in memory and answers with an `Advance`: what to
commit in one transaction, and what to do once that is committed. It never stores, runs user
code, waits or arms a timer itself.

A step needs a worker before its code can start (`Advance.want`); the driver grants one
(`PlanExecution.granted`) and only then is the step marked ``running``, so a stored
``running`` step is one whose code has started or is about to.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from pydynflow.action import run_accepts_event
from pydynflow.errors import DynflowError, EventRejected, UnknownStep
from pydynflow.events import Ping, Poll, encode_event
from pydynflow.flow_graph import FlowGraph
from pydynflow.logging import enabled, get_logger
from pydynflow.outcome import PhaseOutcome
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, utcnow
from pydynflow.references import has_references, resolve_references
from pydynflow.rescue import Fail, Pause, RescuePolicy, Retry, Skip, plan_rescue_strategy
from pydynflow.skipping import skip_plan_steps
from pydynflow.states import Phase, PlanState, StepState
from pydynflow.step_ids import StepIds

__all__ = ["Advance", "NotRunnable", "PlanExecution"]

_NONE: frozenset[int] = frozenset()
_NO_CHOSEN: frozenset[tuple[int, str]] = frozenset()
_RUNNABLE = (StepState.PENDING, StepState.ERROR, StepState.SKIPPING, StepState.SUSPENDED)
_DONE = (StepState.SUCCESS, StepState.SKIPPED)
# A step takes events while it runs, waits for a worker, waits out a retry or is suspended;
# an event for one not started yet is kept until it runs.
QUIET = "~"
"""Marks the kept id of an engine wake-up (`Ping`, `Poll`): not noted if never consumed."""
_WAKE_UPS = (Ping, Poll)
_TAKES_EVENTS = (StepState.PENDING, StepState.RUNNING, StepState.SUSPENDED, StepState.ERROR)

"""The exception class recorded on a step whose world died while its code ran."""


class NotRunnable(DynflowError):
    """The plan cannot be executed in its stored state (running elsewhere, stopped...)."""


class Advance:
    """What one decision of `PlanExecution` asks of its driver.

    First commit, in one transaction: ``steps``, ``actions``, the plan row if ``plan_row``,
    output ``chunks`` and the event changes (``envelope_add``: ``(plan id, step id, payload,
    event id)``; ``envelope_pop``: the oldest stored event of a step, consumed;
    ``envelope_clear``: all of a step's). Then: find a worker for each step of ``want`` and
    call `PlanExecution.granted`; start the code of each step of ``launch`` (a fresh start,
    or a parked step resumed with its event); tell the step actors of ``parked`` that their
    suspension is stored; arm ``retry`` timers (step id, seconds); find a worker for the
    finalize phase if ``finalize``; give up the worker requests of ``withdraw``; stop parked
    steps' actors if ``stop_parked``; and report the plan's end if ``finished``.
    """

    __slots__ = (
        "actions",
        "chunks",
        "envelope_add",
        "envelope_clear",
        "envelope_pop",
        "finalize",
        "finished",
        "launch",
        "parked",
        "plan_row",
        "retry",
        "steps",
        "stop_parked",
        "want",
        "withdraw",
    )

    def __init__(self) -> None:
        # Lists only where most decisions add something; the rest start as shared empty
        # tuples and become lists when used (every step outcome builds one).
        self.steps: list[Step] = []
        self.actions: list[ActionRecord] = []
        self.plan_row = False
        self.chunks: list[tuple[Any, ...]] | tuple[()] = ()
        self.envelope_add: list[tuple[Any, ...]] | tuple[()] = ()
        self.envelope_pop: list[tuple[str, int]] | tuple[()] = ()
        self.envelope_clear: list[tuple[str, int]] | tuple[()] = ()
        self.want: list[int] = []
        self.launch: list[int] = []
        self.parked: list[int] | tuple[()] = ()
        self.retry: list[tuple[int, float]] | tuple[()] = ()
        self.finalize = False
        self.withdraw: list[int] | tuple[()] = ()
        self.stop_parked = False
        self.finished = False

    def has_changes(self) -> bool:
        """Return whether there is anything to commit."""
        return bool(
            self.steps
            or self.actions
            or self.plan_row
            or self.chunks
            or self.envelope_add
            or self.envelope_pop
            or self.envelope_clear
        )


class PlanExecution:
    """The decisions of one plan's execution: its run flow, rescue, finalize and end.

    Args:
        plan: the plan, ``planned`` or ``paused``; the core changes it in place.
        world_id: the executing world, recorded in the plan's history.
        auto_rescue: apply the plan's rescue strategy when it fails (see `pydynflow.rescue`).
    """

    # Slots, not a __dict__: waiting plans, which may be many, each keep one. What is
    # rarely set starts as a shared empty value, replaced (never changed in place) when set.
    __slots__ = (
        "chosen_ids",
        "active",
        "auto_rescue",
        "consuming",
        "continuing",
        "events",
        "finishing",
        "first_runs",
        "graph",
        "halting",
        "parked",
        "plan",
        "rearm",
        "rescued",
        "retrying",
        "waking",
        "wanting",
        "winding_down",
        "world_id",
    )

    def __init__(self, plan: ExecutionPlan, world_id: str | None, *, auto_rescue: bool = True):
        self.plan = plan
        self.world_id = world_id
        self.auto_rescue = auto_rescue
        self.graph = FlowGraph(plan.run_flow)
        self.active = StepIds()  # granted and not finished: running or parked
        self.parked = StepIds()  # suspended: their code returned, they wait for events
        self.winding_down = False
        self.halting = False
        self.finishing = False
        self.continuing = False  # failed steps are failures (a restart), not steps to re-run
        self.rescued: frozenset[int] = _NONE  # failed steps auto-rescue already acted on
        self.retrying: frozenset[int] = _NONE  # failed steps waiting out a Retry backoff
        self.waking: dict[int, bool] | None = None  # parked steps with an event, to wake
        self.rearm: frozenset[int] = _NONE  # continuing: failed steps a stop kept from a retry
        self.events: dict[int, list[str]] | None = None  # accepted, not consumed, per step
        # Steps running on a stored event: its envelope is dropped with the run's outcome,
        # so a crash while the run works on it leaves it stored for the step's next run.
        self.consuming: frozenset[int] = _NONE
        # (step, id) of ids senders chose; a set once there is one.
        self.chosen_ids: set[tuple[int, str]] | frozenset[tuple[int, str]] = _NO_CHOSEN
        # Steps ready and waiting for a worker, and steps granted for their first run (their
        # start time is due from their outcome).
        self.wanting: set[int] | frozenset[int] = _NONE
        self.first_runs: set[int] | frozenset[int] = _NONE

    # -- start ---------------------------------------------------------------------------

    def begin(
        self,
        *,
        resume: bool = False,
        continuing: bool = False,
        stored_events: Iterable[tuple[int, str]] = (),
        note: dict[str, Any] | None = None,
    ) -> Advance:
        """Start executing: the plan moves to ``running`` and its first steps want workers.

        ``resume``: a person asked (`World.resume`): failed steps run again with a fresh set
        of `Retry` attempts, and a paused plan gets a ``"resume"`` history entry (with
        ``note``).
        ``continuing``: a restart after a stop or a crash: failed steps are failures, to
        which their `Retry` attempts left and the rescue strategy apply. ``stored_events``:
        ``(step id, event id)`` of events accepted earlier and not consumed yet.

        Raises:
            NotRunnable: the plan is not ``planned`` or ``paused``.
        """
        plan = self.plan
        if plan.state not in (PlanState.PLANNED, PlanState.PAUSED):
            raise NotRunnable(f"execution plan {plan.id} is {plan.state}, not runnable")
        if continuing:
            self.continuing = True
            last_pause = next(
                (e for e in reversed(plan.history) if e.name == "pause execution"), None
            )
            if last_pause is not None and last_pause.details:
                self.rearm = frozenset(last_pause.details.get("retrying", ()))
        if resume and plan.state == PlanState.PAUSED:
            plan.note("resume", self.world_id, note)
            for step in plan.steps.values():
                if step.state == StepState.ERROR:
                    step.retries = 0
        plan.transition(PlanState.RUNNING, self.world_id)
        for step_id, event_id in stored_events:
            self._keep_event(step_id, event_id)
        advance = Advance()
        advance.plan_row = True
        done = [sid for sid, step in plan.steps.items() if step.state in _DONE]
        self._take(self.graph.start(done), advance)
        self._maybe_over(advance)
        return advance

    # -- run flow ------------------------------------------------------------------------

    def _take(self, step_ids: Iterable[int], advance: Advance) -> None:
        """Handle steps that became ready: most want a worker."""
        steps = self.plan.steps
        ready = list(step_ids)
        while ready:
            step_id = ready.pop(0)
            step = steps[step_id]
            state = step.state
            if self.winding_down:
                self.graph.fail(step_id)  # not started: it stays as it is
                continue
            if state == StepState.SKIPPING and not run_accepts_event(step.action_class):
                step.transition(StepState.SKIPPED)  # a run without events is not called
                _stamp(step)
                advance.steps.append(step)
                ready.extend(self.graph.complete(step_id))
                continue
            if state not in _RUNNABLE:
                self._fail(step, DynflowError(f"step {step_id} cannot run from {state}"))
                advance.steps.append(step)
                continue
            if state == StepState.ERROR and self.continuing:
                self._failed(step, advance)
                continue
            self._want(step_id)
            advance.want.append(step_id)

    def _want(self, step_id: int) -> None:
        if not self.wanting:
            self.wanting = set()
        self.wanting.add(step_id)  # type: ignore[union-attr]

    def granted(self, step_id: int, advance: Advance) -> bool:
        """A worker is free for ``step_id``: mark it ``running`` (its code starts once
        that is committed). Return False if the step no longer needs it (give it back)."""
        step = self.plan.steps[step_id]
        waking = self.waking
        if waking is not None and step_id in waking:
            return self._wake(step, waking.pop(step_id), advance)
        if step_id not in self.wanting:
            return False
        self.wanting = self.wanting - {step_id} if len(self.wanting) > 1 else _NONE
        if self.winding_down:
            self.graph.fail(step_id)
            return False
        state = step.state
        if state != StepState.SKIPPING:
            record = self.plan.actions[step.action_id]
            if has_references(record.input):
                try:
                    record.input = resolve_references(record.input, self._output_of)
                except DynflowError as exc:
                    self._fail(step, exc)
                    advance.steps.append(step)
                    self._maybe_over(advance)
                    return False
                advance.actions.append(record)
            step.attempts += 1
            step.transition(StepState.RUNNING)
        if step.started_at is None:  # until its outcome says when its code really started
            step.started_at = utcnow()
            self.first_runs = self.first_runs | {step_id}
        self.active.add(step_id)
        advance.steps.append(step)
        advance.launch.append(step_id)
        return True

    def _wake(self, step: Step, persisted: bool, advance: Advance) -> bool:
        """A parked step got a worker for its next event: back to ``running``."""
        if self.winding_down or step.id not in self.parked:
            return False  # it stays suspended; the event stays stored for its next run
        self.parked.discard(step.id)
        step.transition(StepState.RUNNING)
        advance.steps.append(step)
        if persisted:
            self.consuming |= {step.id}
            pending = self.events.get(step.id) if self.events is not None else None
            if pending:
                pending.pop(0)
        advance.launch.append(step.id)
        return True

    def wake(self, step_id: int, persisted: bool) -> Advance:
        """A parked step has an event to process: it wants a worker (``persisted``: the
        event is a stored one, to be dropped from storage when the step takes it)."""
        advance = Advance()
        if step_id not in self.parked or self.winding_down:
            return advance
        if self.waking is None:
            self.waking = {}
        self.waking[step_id] = persisted
        advance.want.append(step_id)
        return advance

    def outcome(self, step_id: int, outcome: PhaseOutcome, advance: Advance) -> None:
        """A step's code returned: record what it did and decide what follows."""
        plan = self.plan
        step = plan.steps[step_id]
        record = plan.actions[step.action_id]
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        if step_id in self.consuming:  # the event it ran on is consumed with this outcome
            self.consuming -= {step_id}
            _append(advance, "envelope_pop", (plan.id, step_id))
        if step_id in self.first_runs:
            self.first_runs = self.first_runs - {step_id} if len(self.first_runs) > 1 else _NONE
            if outcome.started_at is not None:
                step.started_at = outcome.started_at
        if outcome.chunks:
            _extend(advance, "chunks", [(plan.id, record.id, *c) for c in outcome.chunks])
        if outcome.output != record.output:
            record.output = outcome.output
            advance.actions.append(record)
        advance.steps.append(step)
        if outcome.state == StepState.SUSPENDED:
            step.transition(StepState.SUSPENDED)
            self.parked.add(step_id)
            _append(advance, "parked", step_id)
            if enabled(logging.DEBUG):
                self._log.debug(
                    "step suspended", step_id=step_id, action_class=step.action_class_name
                )
            self._maybe_over(advance)
            return
        self.active.discard(step_id)
        self.parked.discard(step_id)
        skipping = step.state == StepState.SKIPPING
        if outcome.state == StepState.SUCCESS:
            step.transition(StepState.SKIPPED if skipping else StepState.SUCCESS)
            if not skipping:  # a skipped step keeps the error it was skipped for
                step.error = None
        else:
            step.transition(StepState.ERROR)
            step.error = outcome.error
        _stamp(step)
        if enabled(logging.DEBUG):
            self._log.debug(
                "step finished",
                step_id=step_id,
                action_class=step.action_class_name,
                phase=step.phase,
                state=step.state,
            )
        self._undelivered(step_id, advance)
        if step.state in _DONE:
            self._take(self.graph.complete(step_id), advance)
        elif skipping or not self._retry_later(step, advance):  # a failed skip is not retried
            self.graph.fail(step_id)
        self._maybe_over(advance)

    def _failed(self, step: Step, advance: Advance) -> None:
        """A failed step found on a restart: retry it if attempts are left, else it stays
        failed (and the rescue strategy decides once nothing else runs). A retry that a stop
        interrupted is armed again, with its own backoff, without taking another attempt."""
        if step.id in self.rearm:
            policy = step.action_class.rescue
            assert isinstance(policy, Retry)
            self.retrying |= {step.id}
            _append(advance, "retry", (step.id, policy.delay(step.retries)))
        elif not self._retry_later(step, advance):
            self.graph.fail(step.id)

    def _retry_later(self, step: Step, advance: Advance) -> bool:
        """Arm a retry of a failed step if its action's policy allows one more attempt.

        The step stays in flight (``error``) while the driver's clock waits out the backoff.
        """
        policy = step.action_class.rescue
        if not isinstance(policy, Retry) or step.retries >= policy.attempts:
            return False
        if self.winding_down:
            return False
        step.retries += 1
        delay = policy.delay(step.retries)
        self._log.warning(
            "step failed, retrying",
            step_id=step.id,
            action_class=step.action_class_name,
            phase=step.phase,
            attempt=step.attempts,
            retry=step.retries,
            of=policy.attempts,
            backoff=delay,
            error=str(step.error),
        )
        _add(advance.steps, step)
        self.retrying |= {step.id}
        _append(advance, "retry", (step.id, delay))
        return True

    def retry_due(self, step_id: int) -> Advance:
        """A retry's backoff is over: the step wants a worker again (or the finalize
        phase runs again)."""
        advance = Advance()
        if step_id not in self.retrying:  # wound down meanwhile
            return advance
        self.retrying -= {step_id}
        if self.plan.steps[step_id].phase == Phase.FINALIZE:
            advance.finalize = True  # the finalize phase runs again from its start
            return advance
        if self.finishing:
            return advance
        self._want(step_id)
        advance.want.append(step_id)
        return advance

    def _fail(self, step: Step, exc: BaseException) -> None:
        step.state = StepState.ERROR  # bypasses the table: the step never started
        step.error = StepError.from_exception(exc)
        self.graph.fail(step.id)

    def _output_of(self, action_id: int) -> dict[str, Any]:
        return self.plan.actions[action_id].output

    # -- events --------------------------------------------------------------------------

    def accept_event(
        self, step_id: int, event_id: str, payload: Any, chosen: bool = False
    ) -> Advance | None:
        """Take an event for a step: store it, then hand it to the step.

        ``chosen``: its sender chose ``event_id``; an event with an id the step got
        already is not taken again, and None is returned (the sender is told it was).

        Raises:
            UnknownStep: the plan has no such step.
            EventRejected: the step can no longer take events.
        """
        step = self.plan.steps.get(step_id)
        if step is None:
            raise UnknownStep(f"execution plan {self.plan.id} has no step {step_id}")
        if chosen and (step_id, event_id) in self.chosen_ids:
            return None
        if self.halting:
            raise EventRejected(f"execution plan {self.plan.id} is halting: it takes no events")
        if not self.takes_events(step):
            raise EventRejected(
                f"step {step_id} of execution plan {self.plan.id} is {step.state}, "
                "not waiting for events"
            )
        # A wake-up the engine sent itself (`Ping`, `Poll`) that the step ends without is
        # no news: it is dropped with the others but not noted in the history.
        self._keep_event(step_id, QUIET + event_id if isinstance(payload, _WAKE_UPS) else event_id)
        advance = Advance()
        envelope: tuple[Any, ...] = (self.plan.id, step_id, encode_event(payload), event_id)
        if chosen:
            if not self.chosen_ids:
                self.chosen_ids = set()
            self.chosen_ids.add((step_id, event_id))  # type: ignore[union-attr]
            envelope += (True,)
        _append(advance, "envelope_add", envelope)
        return advance

    def takes_events(self, step: Step) -> bool:
        """Return whether ``step`` can take an event now (or keep it until it runs)."""
        if self.finishing or self.halting:  # a halted plan stops: nothing would run it
            return False
        if step.phase != Phase.RUN or step.state not in _TAKES_EVENTS:
            return False
        if step.state == StepState.ERROR:
            return step.id in self.retrying
        return True

    def keep_stored_event(self, step_id: int, event_id: str) -> None:
        """Count an event another world stored for a step as accepted (for its history
        should the step end without consuming it)."""
        self._keep_event(step_id, event_id)

    def _keep_event(self, step_id: int, event_id: str) -> None:
        if self.events is None:
            self.events = {}
        self.events.setdefault(step_id, []).append(event_id)

    def _undelivered(self, step_id: int, advance: Advance) -> None:
        """A step ended: record the events it never consumed, and drop them."""
        pending = self.events.pop(step_id, None) if self.events is not None else None
        if not pending:
            return
        _append(advance, "envelope_clear", (self.plan.id, step_id))
        pending = [event_id for event_id in pending if not event_id.startswith(QUIET)]
        if not pending:
            return
        for event_id in pending:
            self.plan.note(
                "event not delivered", self.world_id, {"step_id": step_id, "event_id": event_id}
            )
        advance.plan_row = True
        self._log.warning(
            "events not delivered: the step ended without consuming them",
            step_id=step_id,
            event_ids=pending,
        )

    # -- stopping ------------------------------------------------------------------------

    def wind_down(self, halt: bool = False) -> Advance:
        """Start nothing new; end (``paused``, or ``stopped`` when ``halt``) once the
        running calls return. Suspended steps stay suspended."""
        advance = Advance()
        self.winding_down = True
        if halt:
            self.halting = True
        withdrawn = list(self.wanting)
        for step_id in withdrawn:
            self.graph.fail(step_id)  # not started: it stays as it is
        self.wanting = _NONE
        if self.waking:
            withdrawn.extend(self.waking)
            self.waking = None
        advance.withdraw = withdrawn
        if self.finishing and self.retrying:  # a finalize retry is waiting: stop now
            retrying, self.retrying = self.retrying, _NONE
            self._finish(PlanState.PAUSED, advance, reason="stop", retrying=retrying)
        else:
            self._maybe_over(advance)
        return advance

    def running_steps(self) -> list[int]:
        """Return the steps whose code runs now (not parked)."""
        return sorted(self.active - self.parked)

    # -- the end of the run flow ---------------------------------------------------------

    def _run_flow_over(self) -> bool:
        if self.finishing:
            return False
        if self.winding_down:  # parked steps stay suspended; running calls are awaited
            return not (self.active - self.parked - self.retrying)
        return not self.active and not self.wanting and self.graph.is_done()

    def _maybe_over(self, advance: Advance) -> None:
        if self._run_flow_over():
            self._after_run_flow(advance)

    def _after_run_flow(self, advance: Advance) -> None:
        if self.winding_down:
            retrying, self.retrying = self.retrying, _NONE  # their steps stay failed
            advance.stop_parked = True
            if self.halting:
                self._finish(PlanState.STOPPED, advance)
            else:
                # A restart arms their retries again (see `_failed`).
                self._finish(PlanState.PAUSED, advance, reason="stop", retrying=retrying)
        elif self.graph.is_complete():
            failed = [s for s in self._finalize_steps() if s.state == StepState.ERROR]
            if failed and self.continuing:
                self.finishing = True
                self._finalize_failed(failed, advance)
            elif self._finalize_steps():
                self.finishing = True
                advance.finalize = True
            else:
                self._finish(PlanState.STOPPED, advance)
        else:
            strategy = self._rescue_strategy()
            if strategy is Skip:
                self._skip_failed_run_steps(advance)
            elif strategy is Fail:
                self._finish(PlanState.STOPPED, advance)
            else:
                self._finish(PlanState.PAUSED, advance, reason="error")

    def _rescue_strategy(self) -> RescuePolicy:
        """Return the strategy to apply now: Pause unless auto-rescue may act.

        Each failed step is rescued once: a step that fails again after its rescue (its
        ``run(Skip)`` raised, say) pauses the plan, as in Dynflow.
        """
        if not self.auto_rescue:
            return Pause
        failed = {sid for sid, step in self.plan.steps.items() if step.state == StepState.ERROR}
        if not failed or failed & self.rescued:
            return Pause
        self.rescued |= frozenset(failed)
        strategy = plan_rescue_strategy(self.plan)
        self._log.info("rescuing plan", strategy=strategy.name)
        return strategy

    def _skip_failed_run_steps(self, advance: Advance) -> None:
        """Skip every failed run step (and what depends on it) and go on with the flow."""
        for step in self.plan.steps_of_phase(Phase.RUN):
            if step.state == StepState.ERROR:
                for skipped in skip_plan_steps(self.plan, step):
                    _add(advance.steps, skipped)
        self.graph = FlowGraph(self.plan.run_flow)
        done = [sid for sid, step in self.plan.steps.items() if step.state in _DONE]
        self._take(self.graph.start(done), advance)
        self._maybe_over(advance)

    # -- finalize ------------------------------------------------------------------------

    def _finalize_steps(self) -> list[Step]:
        steps = self.plan.steps
        finalize = [steps[sid] for sid in self.plan.finalize_flow.all_step_ids()]
        return [step for step in finalize if step.state != StepState.SKIPPED]

    def finalize_work(self) -> tuple[list[Step], dict[int, ActionRecord]]:
        """Return copies of the finalize steps to run, in order, and of their actions.

        The phase runs from its start (every step pending again), on copies: the plan
        changes only once the whole phase is done (`finalize_done`).
        """
        snapshots = [copy.copy(step) for step in self._finalize_steps()]
        for step in snapshots:
            if step.state in (StepState.SUCCESS, StepState.ERROR):
                step.transition(StepState.PENDING)
        records = {s.action_id: copy.copy(self.plan.actions[s.action_id]) for s in snapshots}
        return snapshots, records

    def finalize_done(
        self,
        steps: Iterable[Step],
        records: Iterable[ActionRecord],
        chunks: Iterable[tuple[Any, ...]] = (),
    ) -> Advance:
        """The finalize phase ran (``steps`` and ``records`` as it left them): commit it
        all, and end the plan or handle its failure."""
        advance = Advance()
        outputs = {record.id: record.output for record in records}
        ran = list(steps)
        for step in ran:
            stored = self.plan.actions[step.action_id]
            stored.output = outputs.get(stored.id, stored.output)
            step.action = stored
            self.plan.steps[step.id] = step
            advance.steps.append(step)
            _add(advance.actions, stored)
        chunks = list(chunks)
        if chunks:
            _extend(advance, "chunks", chunks)
        failed = [step for step in ran if step.state == StepState.ERROR]
        if not failed:
            self._finish(PlanState.STOPPED, advance)
        else:
            self._finalize_failed(failed, advance)
        return advance

    def _finalize_failed(self, failed: list[Step], advance: Advance) -> None:
        if not self.halting and self._retry_later(failed[0], advance):
            return  # the phase runs again after the backoff (`retry_due`)
        strategy = self._rescue_strategy()
        if strategy is Skip:  # skip the failed finalize steps, run the phase again
            for step in failed:
                step.transition(StepState.SKIPPED)
                _add(advance.steps, step)
            if self._finalize_steps():
                advance.finalize = True
            else:
                self._finish(PlanState.STOPPED, advance)
        elif strategy is Fail:
            self._finish(PlanState.STOPPED, advance)
        else:
            self._finish(PlanState.PAUSED, advance, reason="error")

    # -- end -----------------------------------------------------------------------------

    def _finish(
        self,
        state: PlanState,
        advance: Advance,
        reason: str | None = None,
        retrying: frozenset[int] = _NONE,
    ) -> None:
        self.finishing = True
        if state == PlanState.STOPPED and self.events:  # kept for steps that never ran
            for step_id in list(self.events):
                self._undelivered(step_id, advance)
        details: dict[str, Any] | None = None
        if reason is not None:
            details = {"reason": reason}
            if retrying:
                details["retrying"] = sorted(retrying)
        self.plan.transition(state, self.world_id, details)
        advance.plan_row = True
        advance.finished = True

    @property
    def _log(self) -> Any:
        root = self.plan.root_plan_step
        return get_logger(
            world_id=self.world_id,
            plan_id=self.plan.id,
            label=self.plan.label,
            action_class=root.action_class_name if root else None,
        )


def _stamp(step: Step) -> None:
    step.ended_at = utcnow()
    if step.started_at is not None:
        step.real_time = (step.ended_at - step.started_at).total_seconds()


def _add(items: list[Any], item: Any) -> None:
    """Append ``item`` unless that very object is in ``items`` (steps compare by value)."""
    if not any(existing is item for existing in items):
        items.append(item)


def _append(advance: Advance, name: str, item: Any) -> None:
    """Append to one of an advance's lazily created lists."""
    current = getattr(advance, name)
    if isinstance(current, tuple):
        setattr(advance, name, [item])
    else:
        current.append(item)


def _extend(advance: Advance, name: str, items: list[Any]) -> None:
    current = getattr(advance, name)
    if isinstance(current, tuple):
        setattr(advance, name, list(items))
    else:
        current.extend(items)
