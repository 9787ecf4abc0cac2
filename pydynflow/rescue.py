"""Rescue policies: what the plan supervisor does when a run or finalize step fails.

`Pause`, `Skip` and `Fail` are Dynflow's rescue strategies; `Retry` is a restart policy that
re-runs the step before one of them applies.
"""

from __future__ import annotations

from dataclasses import dataclass


class RescuePolicy:
    """Base of the rescue policies; compare them with ``is`` for the three strategies."""

    name: str = ""

    def __repr__(self) -> str:
        return self.name


class _Strategy(RescuePolicy):
    def __init__(self, name: str) -> None:
        self.name = name


Pause: RescuePolicy = _Strategy("Pause")
"""Leave the plan ``paused`` with result ``error`` so a person can resume or skip."""

Skip: RescuePolicy = _Strategy("Skip")
"""Mark the failed step (and what depends on it) ``skipped`` and go on: result ``warning``."""

Fail: RescuePolicy = _Strategy("Fail")
"""Stop the plan (``stopped`` / ``error``); pending steps stay pending."""


@dataclass(frozen=True)
class Retry(RescuePolicy):
    """Restart a failed step up to ``attempts`` more times, then apply ``then``.

    Waits ``backoff * factor ** (attempt - 1)`` seconds (at most ``max_backoff``) before each
    new attempt.
    """

    attempts: int
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 60.0
    then: RescuePolicy = Pause

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"Retry({self.attempts})"

    def delay(self, attempt: int) -> float:
        """Return the wait before retry number ``attempt`` (1-based)."""
        return min(self.max_backoff, self.backoff * self.factor ** max(0, attempt - 1))


def combine(strategies: list[RescuePolicy]) -> RescuePolicy:
    """Combine per-step strategies as Dynflow does: all Skip -> Skip, all Fail -> Fail."""
    if strategies and all(s is Skip for s in strategies):
        return Skip
    if strategies and all(s is Fail for s in strategies):
        return Fail
    return Pause
