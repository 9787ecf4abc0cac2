"""`Polling`: start an external task, then poll it until it is done (Dynflow's
``Action::Polling``), suspended between polls."""

from __future__ import annotations

from typing import Any

from pydynflow.action import Action
from pydynflow.events import Poll
from pydynflow.logging import get_logger
from pydynflow.mixins._next import next_run


class Polling(Action):
    """Start an external task, then poll it until it is done, suspended between polls.

    Define `invoke_external_task` (start the task, return its JSON-able state) and
    `poll_external_task` (return the task's new state), and `done` if the state has no
    ``"done"`` key. The task is kept in ``output["task"]``, so a step restarted after a
    crash polls the task it started instead of starting another (if that poll fails, it
    starts a new one). Failing polls are retried `poll_max_retries` times.
    """

    poll_intervals: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)
    attempts_before_next_interval: int = 5
    poll_max_retries: int = 3

    def invoke_external_task(self) -> Any:
        """Start the external task and return its state."""
        raise NotImplementedError(f"{self.class_name()} must define invoke_external_task()")

    def poll_external_task(self) -> Any:
        """Return the external task's current state."""
        raise NotImplementedError(f"{self.class_name()} must define poll_external_task()")

    def done(self) -> bool:
        """Return whether the external task finished (by default ``task["done"]``)."""
        task = self.external_task
        return bool(isinstance(task, dict) and task.get("done"))

    def on_finish(self) -> None:
        """Called once the task is done, before the step succeeds."""

    @property
    def external_task(self) -> Any:
        """Return the task state kept in ``output["task"]``."""
        return self.output.get("task")

    @external_task.setter
    def external_task(self, task: Any) -> None:
        self.output["task"] = task

    @property
    def poll_attempts(self) -> dict[str, int]:
        """Return the poll counters kept in ``output["poll_attempts"]``."""
        attempts = self.output.get("poll_attempts")
        if attempts is None:
            attempts = self.output["poll_attempts"] = {"total": 0, "failed": 0}
        return attempts  # type: ignore[no-any-return]

    def poll_interval(self) -> float:
        """Return the wait before the next poll (longer as attempts grow)."""
        intervals = self.poll_intervals
        index = self.poll_attempts["total"] // self.attempts_before_next_interval
        return intervals[min(index, len(intervals) - 1)]

    def run(self, event: Any = None) -> None:
        """Run Dynflow's polling loop: invoke, then poll on each `Poll` event."""
        if event is None:
            if self.external_task is not None:
                self._resume_external_task()
            else:
                self.external_task = self.invoke_external_task()
        elif isinstance(event, Poll):
            self._poll_with_rescue()
        else:
            next_run(self, Polling, event)
            return
        if self.done():
            self.on_finish()
            return
        self.plan_event(Poll(), self.poll_interval())
        self.suspend()

    def _resume_external_task(self) -> None:
        try:
            self._poll_with_rescue()
        except Exception:
            self.external_task = self.invoke_external_task()

    def _poll_with_rescue(self) -> None:
        attempts = self.poll_attempts
        attempts["total"] += 1
        try:
            self.external_task = self.poll_external_task()
            attempts["failed"] = 0
        except Exception as error:
            attempts["failed"] += 1
            if attempts["failed"] >= self.poll_max_retries:
                raise
            get_logger(plan_id=self.execution_plan_id, action_class=self.class_name()).warning(
                "poll failed, retrying",
                attempt=attempts["failed"],
                retry_in=self.poll_interval(),
                error=repr(error),
            )
