"""`ChangeSet`: one state change as a writer takes it, and how a batch of them is written.

A change set holds snapshots (`pydynflow.storage.rows`), a claim, events and output to store,
coordinator records to delete (locks a plan lets go of) and requests for other worlds to
store; the persistence actor makes one
per state change. `write_requests` writes a batch of
them in one transaction: later changes to a row win, a plan's full row goes before the
metadata-only updates of it, and a change whose claim is refused writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from pydynflow.storage.rows import ActionSnapshot, PlanSnapshot, StepSnapshot

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = ["ChangeSet", "ClaimValues", "write_requests"]

ClaimValues = tuple[str, tuple[str, ...], str]
"""A claim as a change set carries it: (plan id, the states it may be claimed from, the state
it moves to)."""


class ChangeSet(NamedTuple):
    """One state change to commit: rows to upsert, a claim, events and output to store."""

    steps: tuple[StepSnapshot, ...] = ()
    actions: tuple[ActionSnapshot, ...] = ()
    plans: tuple[PlanSnapshot, ...] = ()
    claim: ClaimValues | tuple[str, tuple[str, ...]] | None = None
    """Move the plan to a state first (`pydynflow.storage.Storage.claim_plan`; ``running``
    unless a third value names another); if it is not in one of the states, nothing of this
    change set is written."""
    chunks: tuple[tuple[str, int, Any, str | None, datetime], ...] = ()
    """Output chunks to append (`pydynflow.storage.Storage.add_output_chunks`)."""
    envelope_add: tuple[tuple[Any, ...], ...] = ()
    """Events to store: (plan id, step id, payload[, event id])."""
    envelope_pop: tuple[tuple[str, int], ...] = ()
    """Steps whose oldest stored event to delete: (plan id, step id)."""
    envelope_clear: tuple[tuple[str, int], ...] = ()
    """Steps whose stored events to delete, all of them: (plan id, step id)."""
    records_delete: tuple[tuple[str, str, str], ...] = ()
    """Coordinator records to delete while their owner holds them: (class, id, owner id)."""
    posts: tuple[tuple[str, dict[str, Any]], ...] = ()
    """Requests for other worlds to store: (inbox, request) (a client's execute request,
    stored with the plan it names)."""


make_change_set = cast(
    Callable[[tuple[Any, ...]], ChangeSet], functools.partial(tuple.__new__, ChangeSet)
)
"""Return a `ChangeSet` of its values, given in field order as one tuple (no Python call)."""


def _write_plan_rows(
    storage: Storage, full: PlanSnapshot | None, meta: PlanSnapshot | None
) -> None:
    """Write one plan's pending rows now: its full row, then its newer metadata."""
    if full is None and meta is None:
        return
    storage.write_rows(
        full_plans=[storage.plan_row_of(full)[1]] if full is not None else [],
        plans=[storage.plan_row_of(meta)[1]] if meta is not None else [],
    )


def write_requests(
    storage: Storage,
    requests: Sequence[ChangeSet],
    after: Callable[[set[int]], Any] | None = None,
) -> set[int]:
    """Write ``requests`` in one transaction of ``storage``; return the refused claims' indexes.

    Their snapshots are encoded here. Later changes to the same row win; a plan's full row
    (with its flows) is written before metadata-only updates of it, so an insert never lacks
    its flows. A request whose claim is refused writes nothing. ``after(refused)`` runs last,
    inside the transaction.
    """
    refused: set[int] = set()
    full: dict[str, PlanSnapshot] = {}
    meta: dict[str, PlanSnapshot] = {}
    steps: dict[tuple[str, int], StepSnapshot] = {}
    actions: dict[tuple[str, int], ActionSnapshot] = {}
    with storage.batched_transaction():  # PostgreSQL: the rows go together, with COMMIT
        for index, request in enumerate(requests):
            claim = request.claim
            if claim is not None:
                plan_id, from_states, *to_state = claim
                # A claim sees the plan as the requests before it in this transaction left
                # it (a recovery pausing it, then the claim that runs it again).
                _write_plan_rows(storage, full.pop(plan_id, None), meta.pop(plan_id, None))
                if not storage.claim_plan(plan_id, from_states, *to_state):
                    refused.add(index)
                    continue
            for plan in request.plans:
                (full if plan.flows is not None else meta)[plan.plan_id] = plan
            for step in request.steps:
                steps[(step.plan_id, step.step_id)] = step
            for action in request.actions:
                actions[(action.plan_id, action.action_id)] = action
        plan_row, step_row, action_row = (
            storage.plan_row_of,
            storage.step_row_of,
            storage.action_row_of,
        )
        storage.write_rows(
            full_plans=[plan_row(snapshot)[1] for snapshot in full.values()],
            plans=[plan_row(snapshot)[1] for snapshot in meta.values()],
            steps=[step_row(snapshot) for snapshot in steps.values()],
            actions=[action_row(snapshot) for snapshot in actions.values()],
        )
        for index, request in enumerate(requests):  # rarer: events, output, locks
            if index in refused:
                continue
            if request.chunks:
                storage.add_output_chunks(request.chunks)
            # Nothing read back: on PostgreSQL they go with the rest, in one round trip.
            for envelope in request.envelope_add:
                storage.write_envelope(*envelope)
            for plan_id, step_id in request.envelope_pop:
                storage.drop_oldest_envelope(plan_id, step_id)
            for plan_id, step_id in request.envelope_clear:
                storage.drop_envelopes(plan_id, step_id)
            for record_class, record_id, owner_id in request.records_delete:
                storage.delete_record(record_class, record_id, owner_id)
            for inbox, data in request.posts:
                storage.write_request(inbox, data)
        if after is not None:  # in the same transaction (see `pydynflow.storage.writer.ledger`)
            after(refused)
    return refused
