"""Request envelopes are locked in id order on PostgreSQL, so that writers do not deadlock.

A world answers the requests it took in id order (`Requests.answer_requests`). When another
world declares it dead, it moves that world's requests back to every executor
(`Requests.move_inbox`) and deletes its replies (`Requests.clear_inboxes`): an update or a
delete by receiver, which locks rows in the order it finds them in the table. A row's place
there is where its latest version was written, not its id: a request taken later sits after
one taken earlier. If the world is alive after all (a long pause), its answer and the move
could each hold a row the other wants, and PostgreSQL would fail one of them as a deadlock:
both lock in id order instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from pydynflow.storage import Storage
from pydynflow.storage.requests import ANY_EXECUTOR, reply_inbox, world_inbox
from tests.support.postgres import connect

pytestmark = pytest.mark.postgres

WAIT = 30.0


@pytest.fixture
def storage(postgres_url: str) -> Iterator[Storage]:
    store = Storage(postgres_url)
    yield store
    store.close()


def _blocked_backend(storage: Storage, me: int) -> int | None:
    """The pid of another backend of this database waiting for a row lock, if any."""
    row = storage.database.execute_sql(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database() AND pid <> %s",
        (me,),
    ).fetchone()
    return None if row is None else int(row[0])


def _taken_in_reverse(storage: Storage, inbox: str, count: int) -> list[int]:
    """Post ``count`` requests and have ``inbox`` take them last first: the table then
    holds them in the reverse of their id order."""
    ids = [storage.post_request(ANY_EXECUTOR, {"n": n}) for n in range(count)]
    for envelope_id in reversed(ids):
        assert storage.take_requests([envelope_id], ANY_EXECUTOR, inbox)
    return ids


def _move_while_answering(storage: Storage, postgres_url: str, move: Any) -> dict[str, Any]:
    """Answer the requests as `answer_requests` does (in id order), the first deleted but not
    committed while ``move`` runs in another thread; return what each side got."""
    world = world_inbox("w-alive")
    ids = _taken_in_reverse(storage, world, 2)
    answering = connect(postgres_url)
    done: dict[str, Any] = {}
    try:
        with answering.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            me = cursor.fetchone()[0]
            cursor.execute('DELETE FROM "dynflow_envelopes" WHERE "id" = %s', (ids[0],))

            def run_move() -> None:
                try:
                    done["moved"] = move(world)
                except Exception as exc:  # what the move got, for the assertion below
                    done["move_error"] = exc

            mover = threading.Thread(target=run_move)
            mover.start()
            # The move is under way once its backend waits for the row lock held here.
            blocked, pause, deadline = None, threading.Event(), time.monotonic() + WAIT
            while blocked is None and mover.is_alive() and time.monotonic() < deadline:
                blocked = _blocked_backend(storage, me)
                pause.wait(0.002)  # between two looks at the server's activity
            assert blocked is not None, f"the move never waited for the answer's lock: {done}"
            try:
                cursor.execute('DELETE FROM "dynflow_envelopes" WHERE "id" = %s', (ids[1],))
                answering.commit()
                done["answered"] = True
            except psycopg2.Error as exc:
                answering.rollback()
                done["answer_error"] = exc
            mover.join(WAIT)
            assert not mover.is_alive()
    finally:
        answering.close()
    return done


def test_moving_a_live_worlds_requests_waits_for_its_answer_instead_of_deadlocking(
    storage: Storage, postgres_url: str
) -> None:
    done = _move_while_answering(
        storage, postgres_url, lambda world: storage.move_inbox(world, ANY_EXECUTOR)
    )
    assert "answer_error" not in done and "move_error" not in done, done
    assert done == {"answered": True, "moved": 0}  # both answered: nothing left to move


def test_clearing_a_live_worlds_inbox_waits_for_its_answer_instead_of_deadlocking(
    storage: Storage, postgres_url: str
) -> None:
    done = _move_while_answering(
        storage, postgres_url, lambda world: storage.clear_inboxes([world])
    )
    assert "answer_error" not in done and "move_error" not in done, done
    assert done == {"answered": True, "moved": 0}


def test_a_dead_worlds_requests_and_replies_are_handed_back_and_cleared(storage: Storage) -> None:
    world = world_inbox("w-dead")
    ids = _taken_in_reverse(storage, world, 3)
    storage.post_request(reply_inbox("w-dead"), {"reply": 1})
    assert storage.move_inbox(world, ANY_EXECUTOR) == 3
    assert [envelope_id for envelope_id, _, _ in storage.inbox([ANY_EXECUTOR])] == ids
    assert storage.clear_inboxes([reply_inbox("w-dead")]) == 1
    assert storage.inbox([world, reply_inbox("w-dead")]) == []
