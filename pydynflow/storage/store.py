"""`Storage`: save, load, find and delete execution plans in SQLite or PostgreSQL.

Writes are upserts (``INSERT ... ON CONFLICT (...) DO UPDATE``, the same SQL on SQLite >= 3.24
and PostgreSQL) sent with ``executemany`` on the raw DB-API cursor (``execute_batch`` on
psycopg2, whose ``executemany`` is one round trip per row): peewee's ``insert_many`` measured
5x slower on this hot path. Every payload goes through `pydynflow.storage.codec`.

Threads: a `Storage` may be shared by any number of threads; each thread has its own
connection (peewee's thread-local connection state) and its own transaction stack.

Transactions: each public write (`Storage.save_plan`, `Storage.save_steps`, ...) is atomic on
its own. Inside `Storage.transaction()` it nests as a savepoint, so a batch of writes
(a group commit) commits once, at the end of the outermost block. On SQLite a write
transaction starts with ``BEGIN IMMEDIATE`` (it takes the write lock up front, so it waits for
``busy_timeout`` instead of failing on a lock upgrade); multi-query reads run in a deferred
transaction (SQLite) or a ``REPEATABLE READ`` one (PostgreSQL), so a plan is read from one
snapshot.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import peewee

from pydynflow.errors import (
    CorruptData,
    DataConsistencyError,
    PersistenceError,
    UnknownIdentifier,
    UnknownPlan,
)
from pydynflow.flows import Concurrence, Flow, Sequence, decode_flow, encode_flow
from pydynflow.plan import ActionRecord, ExecutionPlan, HistoryEntry, Step, StepError
from pydynflow.states import Phase, PlanState, Result, StepState
from pydynflow.storage.codec import decode, encode
from pydynflow.storage.database import close_database, is_postgres, is_sqlite, open_database
from pydynflow.storage.migrations import migrate as _migrate
from pydynflow.storage.models import from_db_datetime

try:  # PostgreSQL support is optional (the "postgres" extra)
    import psycopg2
    import psycopg2.extras
except ImportError:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None

__all__ = ["ORDERABLE_COLUMNS", "Storage"]

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    peewee.DatabaseError,
    peewee.InterfaceError,
    sqlite3.Error,
) + ((psycopg2.Error,) if psycopg2 is not None else ())

ORDERABLE_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "state": "state",
    "result": "result",
    "label": "label",
    "started_at": "started_at",
    "ended_at": "ended_at",
    "real_time": "real_time",
    "execution_time": "execution_time",
}
"""``find_plans(order_by=...)`` names and the columns they sort on."""

PLANS = "dynflow_execution_plans"
ACTIONS = "dynflow_actions"
STEPS = "dynflow_steps"
ENVELOPES = "dynflow_envelopes"
CHUNKS = "dynflow_output_chunks"
COORDINATOR = "dynflow_coordinator_records"
_CHILD_TABLES = (CHUNKS, "dynflow_delayed_plans", STEPS, ACTIONS)

PLAN_COLUMNS = (
    "uuid",
    "state",
    "result",
    "label",
    "root_plan_step_id",
    "started_at",
    "ended_at",
    "real_time",
    "execution_time",
    "run_flow",
    "finalize_flow",
    "plan_steps",
    "execution_history",
)
_PLAN_META_COLUMNS = PLAN_COLUMNS[:9] + ("execution_history",)
ACTION_COLUMNS = (
    "execution_plan_uuid",
    "id",
    "class",
    "caller_execution_plan_id",
    "caller_action_id",
    "plan_step_id",
    "run_step_id",
    "finalize_step_id",
    "input",
    "output",
)
STEP_COLUMNS = (
    "execution_plan_uuid",
    "id",
    "action_id",
    "state",
    "phase",
    "started_at",
    "ended_at",
    "real_time",
    "execution_time",
    "progress_done",
    "progress_weight",
    "attempts",
    "queue",
    "action_class",
    "error",
    "children",
    "retries",  # last: a plan row's older step records (one value shorter) still load
)
_IN_CHUNK = 500
_EMPTY_LIST = encode([])

# Snapshots carry times as integer microseconds since the epoch, not datetimes: they cross to
# the writer process pickled, and a datetime (with its time zone) costs pickle ten times an
# int (in W1: 7.4 ms of the world's CPU to pickle its batches instead of 3.0 ms).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(value: datetime | None) -> int | None:
    """Return ``value`` (naive means UTC) as microseconds since the epoch; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int | None) -> datetime | None:
    """Return the aware UTC datetime of `_micros`; None stays None."""
    return None if value is None else _EPOCH + timedelta(microseconds=value)


# The writer turns thousands of times a second into text, nearly all within the same few
# seconds: the text of each whole second is made once (by `datetime.isoformat`, so the
# result is the same to the byte) and the microseconds appended. 3.5x faster than building
# a datetime and formatting it, in W1 a tenth of the writer's CPU.
_SECOND_TEXT: dict[int, str] = {}
_SECOND_TEXT_LIMIT = 4096


def _second_text(second: int) -> str:
    """Return ``YYYY-MM-DDTHH:MM:SS`` for ``second`` (seconds since the epoch, UTC)."""
    text = _SECOND_TEXT.get(second)
    if text is None:
        if len(_SECOND_TEXT) >= _SECOND_TEXT_LIMIT:
            _SECOND_TEXT.clear()
        text = (_EPOCH + timedelta(seconds=second)).replace(tzinfo=None).isoformat()
        _SECOND_TEXT[second] = text
    return text


def _iso(micros: int) -> str:
    """Return `_micros` as ISO text, as ``datetime.isoformat`` writes an aware UTC time."""
    second, micro = divmod(micros, 1_000_000)
    if micro:
        return f"{_second_text(second)}.{micro:06d}+00:00"
    return f"{_second_text(second)}+00:00"


def _sqlite_text(micros: int | None) -> str | None:
    """Return `_micros` as a SQLite datetime column holds it: ``YYYY-MM-DD HH:MM:SS.ffffff``
    (UTC, as `Storage._sqlite_datetime` writes it); None stays None."""
    if micros is None:
        return None
    second, micro = divmod(micros, 1_000_000)
    text = _second_text(second)
    return f"{text[:10]} {text[11:]}.{micro:06d}"


_NAIVE_EPOCH = datetime(1970, 1, 1)


def _naive_from_micros(micros: int | None) -> datetime | None:
    """Return `_micros` as a naive UTC datetime (how PostgreSQL's columns take it)."""
    return None if micros is None else _NAIVE_EPOCH + timedelta(microseconds=micros)


_F = TypeVar("_F", bound=Callable[..., Any])


def _upsert_sql(table: str, columns: tuple[str, ...], key: tuple[str, ...], param: str) -> str:
    names = ", ".join(f'"{column}"' for column in columns)
    values = ", ".join([param] * len(columns))
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
    conflict = ", ".join(f'"{column}"' for column in key)
    return (
        f'INSERT INTO "{table}" ({names}) VALUES ({values}) '
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )


def _select_sql(table: str, columns: tuple[str, ...]) -> str:
    return "SELECT " + ", ".join(f'"{column}"' for column in columns) + f' FROM "{table}"'


def _wrap_errors(operation: str) -> Callable[[_F], _F]:
    """Turn driver errors raised by the decorated method into `PersistenceError`."""

    def decorator(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: Storage, *args: Any, **kwargs: Any) -> Any:
            if self._closed:
                raise PersistenceError(f"{operation}: the storage is closed ({self._describe()})")
            try:
                return method(self, *args, **kwargs)
            except _DRIVER_ERRORS as exc:
                self._after_driver_error()
                raise PersistenceError(
                    f"{operation} failed ({self._describe()}): {type(exc).__name__}: {exc}"
                ) from exc

        return wrapper  # type: ignore[return-value]

    return decorator


class _Atomic:
    """A peewee atomic block whose failed rollback does not hide why it rolled back.

    SQLite rolls a transaction back by itself on some errors (``SQLITE_FULL``: "database or
    disk is full"), and a lost PostgreSQL connection cannot roll back at all: peewee's own
    ``ROLLBACK`` then fails as well ("cannot rollback - no transaction is active", "connection
    already closed"), and that error would replace the one worth reporting.
    """

    __slots__ = ("_block",)

    def __init__(self, block: Any) -> None:
        self._block = block

    def __enter__(self) -> Any:
        return self._block.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> bool:
        try:
            return bool(self._block.__exit__(exc_type, exc, traceback))
        except _DRIVER_ERRORS as failed:
            if exc is not None:
                return False  # the block's own error goes on
            first = _first_failure(failed)
            if first is failed:
                raise
            raise first from None  # the commit's, which the rollback after it hid


def _first_failure(exc: BaseException) -> BaseException:
    """Return the driver error that ``exc`` (raised while handling it) followed.

    A failed rollback is raised while the error that caused it is being handled, so the
    earliest of the driver errors linked by ``__context__`` is the original one.
    """
    while isinstance(exc.__context__, _DRIVER_ERRORS):
        exc = exc.__context__
    return exc


def _as_values(value: Any) -> list[str] | None:
    """Return a filter value as a list of strings (``None``: no filter)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [str(value)]
    return [str(item) for item in value]


def _number(value: Any) -> float | int:
    """Return a stored float, as an int when it is integral (``progress_weight``)."""
    if value is None:
        return 1
    value = float(value)
    return int(value) if value.is_integer() else value


class Storage:
    """Execution plans in a SQLite file, an in-memory SQLite database or PostgreSQL.

    >>> storage = Storage("sqlite:///pydynflow.db")   # doctest: +SKIP
    >>> storage.save_plan(plan); storage.load_plan(plan.id) == plan   # doctest: +SKIP
    True
    """

    def __init__(
        self, url_or_database: str | peewee.Database, *, migrate: bool = True, create: bool = True
    ) -> None:
        """Open the store.

        Args:
            url_or_database: a URL for `pydynflow.storage.open_database` (``sqlite:///x.db``,
                ``sqlite:///:memory:``, ``postgresql://...``), or an open peewee database. A
                database given by URL belongs to the storage and `close` closes it; a database
                object passed in is left for its owner to close.
            migrate: bring the schema to the latest version now (see `migrate`).
            create: create a SQLite file that does not exist (False: refuse it).

        Raises:
            ValueError: for a URL that `open_database` does not accept.
            PersistenceError: if the database cannot be reached or migrated, or does not
                exist and ``create`` is False.
        """
        if isinstance(url_or_database, peewee.Database):
            self._db = url_or_database
            self._owned = False
            self.url: str | None = None
        else:
            self._db = open_database(url_or_database, create=create)
            self._owned = True
            self.url = url_or_database
        self._closed = False
        self._sqlite = is_sqlite(self._db)
        self._postgres = is_postgres(self._db)
        param = self._db.param
        self._sql_plan_upsert = _upsert_sql(PLANS, PLAN_COLUMNS, ("uuid",), param)
        self._sql_plan_meta_upsert = _upsert_sql(PLANS, _PLAN_META_COLUMNS, ("uuid",), param)
        self._sql_action_upsert = _upsert_sql(
            ACTIONS, ACTION_COLUMNS, ("execution_plan_uuid", "id"), param
        )
        self._sql_step_upsert = _upsert_sql(
            STEPS, STEP_COLUMNS, ("execution_plan_uuid", "id"), param
        )
        self._dt = self._sqlite_datetime if self._sqlite else self._naive_utc
        # the same for times in snapshots (`_micros`)
        self._time_value = _sqlite_text if self._sqlite else _naive_from_micros
        if migrate:
            try:
                self.migrate()
            except BaseException:
                if self._owned:
                    close_database(self._db)
                raise

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def database(self) -> peewee.Database:
        """Return the peewee database this storage uses."""
        return self._db

    @property
    def dialect(self) -> str:
        """Return ``"sqlite"`` or ``"postgresql"``."""
        return "sqlite" if self._sqlite else "postgresql" if self._postgres else "other"

    @_wrap_errors("migrate")
    def migrate(self) -> int:
        """Apply missing schema migrations and return the schema version (see `migrations`)."""
        return _migrate(self._db, name=redact_url(self.url) if self.url else None)

    def close(self) -> None:
        """Close the storage; idempotent. Any later call raises `PersistenceError`.

        A database the storage opened from a URL is closed in every thread (call this once no
        thread uses the storage any more; an in-memory database is gone afterwards). A database
        object passed to the constructor is left open for its owner.
        """
        if self._closed:
            return
        self._closed = True
        if self._owned:
            close_database(self._db)

    @property
    def in_memory(self) -> bool:
        """Whether the database lives in this process's memory (no other process can open it)."""
        return bool(getattr(self._db, "memory", False))

    def __enter__(self) -> Storage:
        """Return the storage; `close` it when the ``with`` block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the storage."""
        self.close()

    def __repr__(self) -> str:
        return f"<Storage {self._describe()}>"

    @_wrap_errors("ping")
    def ping(self) -> bool:
        """Return True if the database answers a trivial query.

        Raises:
            PersistenceError: with the driver's reason if it does not.
        """
        row = self._db.execute_sql("SELECT 1").fetchone()
        return bool(row and row[0] == 1)

    @contextmanager
    def transaction(self) -> Iterator[Storage]:
        """Return a context manager: one atomic block for every write made inside it.

        Blocks nest (inner ones are savepoints); the outermost commits, or rolls back if the
        block raises. The transaction belongs to the calling thread. On SQLite it begins with
        ``BEGIN IMMEDIATE``. Driver errors surface as `PersistenceError`, naming the failure
        that ended the transaction (not a rollback that could not follow it); a connection
        it broke is dropped, and the next transaction opens a new one.
        """
        if self._closed:
            raise PersistenceError(f"transaction: the storage is closed ({self._describe()})")
        try:
            with self._write_atomic():
                yield self
        except _DRIVER_ERRORS as exc:
            self._after_driver_error()
            raise PersistenceError(
                f"transaction failed ({self._describe()}): {type(exc).__name__}: {exc}"
            ) from exc
        except PersistenceError:  # a write inside failed: its connection may be gone too
            self._after_driver_error()
            raise

    # -- writes ---------------------------------------------------------------------------

    @_wrap_errors("save_plan")
    def save_plan(self, plan: ExecutionPlan) -> None:
        """Upsert the plan row, all its actions and all its steps in one transaction.

        The ``result`` column gets ``plan.result``. Rows of actions or steps that are no longer
        in ``plan`` are left alone (plans only grow). For an invalid plan (``valid=False``, as
        loaded from rows that did not fit together) only the metadata columns and the history
        are written, never its (unreadable, hence empty) flows, actions or steps.

        Raises:
            SerializationError: if an input, output or error cannot be encoded.
            PersistenceError: if the database refuses the write.
        """
        plan_sql, plan_row = self._plan_statement(plan)
        if plan.valid:
            action_rows = [self._action_row(action) for action in plan.actions.values()]
            step_rows = [self._step_row(step) for step in row_steps(plan.steps.values())]
        else:
            action_rows = step_rows = []
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(plan_sql, plan_row)
            if action_rows:
                self._executemany(cursor, self._sql_action_upsert, action_rows)
            if step_rows:
                self._executemany(cursor, self._sql_step_upsert, step_rows)

    @_wrap_errors("save_plan_row")
    def save_plan_row(self, plan: ExecutionPlan) -> None:
        """Update the plan row's metadata: state, result, label, times and history.

        Never its flows nor the steps its row carries, which planning wrote once (see
        `plan_snapshot`): rewriting them from a loaded plan would drop the pending steps a
        new plan keeps there. The plan must have been saved whole (`save_plan`) before.
        """
        _, plan_row = self.plan_row_of(self.plan_snapshot(plan))
        with self._write_atomic():
            self._db.cursor().execute(self._sql_plan_meta_upsert, plan_row)

    @_wrap_errors("save_steps")
    def save_steps(self, steps: Iterable[Step]) -> None:
        """Upsert ``steps`` (of any plans, whose rows must exist) in one transaction.

        A step listed twice is written twice, the last one wins.
        """
        rows = [self._step_row(step) for step in steps]
        if not rows:
            return
        with self._write_atomic():
            self._executemany(self._db.cursor(), self._sql_step_upsert, rows)

    @_wrap_errors("save_actions")
    def save_actions(self, actions: Iterable[ActionRecord]) -> None:
        """Upsert ``actions`` (of any plans, whose rows must exist) in one transaction."""
        rows = [self._action_row(action) for action in actions]
        if not rows:
            return
        with self._write_atomic():
            self._executemany(self._db.cursor(), self._sql_action_upsert, rows)

    # -- snapshots: the persistence actor's write path ------------------------------------
    #
    # Senders take *snapshots* on their own thread: plain tuples of values nothing changes
    # later (strings, numbers, times as integer microseconds (`_micros`), the JSON data of
    # inputs, outputs and errors, which the engine replaces and never edits in place), cheap
    # to take and to pickle. The writer
    # turns them into rows (`plan_row_of` / `step_row_of` / `action_row_of`: encoding,
    # compression, timestamps), so that work is off the engine's threads (in the writer
    # process), then writes them with `write_rows` and `claim_plan` inside one `transaction`.

    @staticmethod
    def plan_snapshot(
        plan: ExecutionPlan, *, full: bool = False, new: bool = False
    ) -> tuple[Any, ...]:
        """Snapshot ``plan``'s row: metadata and history, plus its flows when ``full``.

        The first value is the plan id; the last is None, or (when ``full``, for a valid
        plan) its flows and the steps its row carries, which then need no rows of their
        own (`row_steps`): its plan-phase steps, and for a ``new`` plan (never stored) also
        the steps that have not started. A step's own row, once written, wins over the
        plan row's copy.
        """
        flows = None
        if full and plan.valid:
            snapshot = Storage.step_snapshot
            flows = (
                encode_flow(plan.run_flow),
                encode_flow(plan.finalize_flow),
                [
                    snapshot(step)[1:]  # `_plan_step_record`, without one call per step
                    for step in plan.steps.values()
                    if step.phase == Phase.PLAN or (new and step.state == StepState.PENDING)
                ],
            )
        return (
            plan.id,
            str(plan.state),
            str(plan.result),
            plan.label,
            plan.root_plan_step_id,
            _micros(plan.started_at),
            _micros(plan.ended_at),
            plan.real_time,
            plan.execution_time,
            [(_micros(e.time), e.name, e.world_id, e.details) for e in plan.history],
            flows,
        )

    @staticmethod
    def step_snapshot(step: Step) -> tuple[Any, ...]:
        """Snapshot one step's row (first two values: plan id, step id)."""
        error = step.error
        # `_micros`, inline for the usual aware times: four snapshots per step run.
        started_at, ended_at = step.started_at, step.ended_at
        started: int | None = None
        ended: int | None = None
        if started_at is not None:
            started = (
                (started_at - _EPOCH) // _MICROSECOND if started_at.tzinfo else _micros(started_at)
            )
        if ended_at is not None:
            ended = (ended_at - _EPOCH) // _MICROSECOND if ended_at.tzinfo else _micros(ended_at)
        return (
            step.execution_plan_id,
            step.id,
            step.action_id,
            str(step.state),
            str(step.phase),
            started,
            ended,
            step.real_time,
            step.execution_time,
            step.progress_done,
            step.progress_weight,
            step.attempts,
            step.queue,
            step.action_class_name,
            None if error is None else error.to_dict(),
            tuple(step.children),
            step.retries,
        )

    @staticmethod
    def action_snapshot(action: ActionRecord) -> tuple[Any, ...]:
        """Snapshot one action's row (first two values: plan id, action id)."""
        return (
            action.execution_plan_id,
            action.id,
            action.action_class_name,
            action.caller_execution_plan_id,
            action.caller_action_id,
            action.plan_step_id,
            action.run_step_id,
            action.finalize_step_id,
            action.input,
            action.output,
        )

    def plan_row_of(self, snapshot: tuple[Any, ...]) -> tuple[bool, tuple[Any, ...]]:
        """Encode a `plan_snapshot`; return (whether it has its flows, the row's values)."""
        time_value = self._time_value
        (plan_id, state, result, label, root, started, ended, real, execution) = snapshot[:9]
        history = [  # HistoryEntry.to_dict
            {"time": _iso(micros), "name": name, "world_id": world_id}
            if details is None
            else {"time": _iso(micros), "name": name, "world_id": world_id, "details": details}
            for micros, name, world_id, details in snapshot[9]
        ]
        flows = snapshot[10]
        started, ended = time_value(started), time_value(ended)
        meta = (plan_id, state, result, label, root, started, ended, real, execution)
        if flows is None:
            return False, (*meta, encode(history))
        run, finalize, plan_steps = flows
        return True, (*meta, encode(run), encode(finalize), encode(plan_steps), encode(history))

    def step_row_of(self, snapshot: tuple[Any, ...]) -> tuple[Any, ...]:
        """Encode a `step_snapshot` into the step's row."""
        time_value = self._time_value
        error, children = snapshot[14], snapshot[15]
        return (
            *snapshot[:5],
            time_value(snapshot[5]),
            time_value(snapshot[6]),
            *snapshot[7:14],
            None if error is None else encode(error),
            _EMPTY_LIST if not children else encode(list(children)),
            snapshot[16],
        )

    @staticmethod
    def action_row_of(snapshot: tuple[Any, ...]) -> tuple[Any, ...]:
        """Encode an `action_snapshot` into the action's row."""
        return (*snapshot[:8], encode(snapshot[8]), encode(snapshot[9]))

    @_wrap_errors("write_rows")
    def write_rows(
        self,
        *,
        full_plans: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
        plans: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
        steps: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
        actions: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    ) -> None:
        """Upsert encoded rows in one transaction: full plan rows first, then the rest."""
        with self._write_atomic():
            cursor = self._db.cursor()
            if full_plans:
                self._executemany(cursor, self._sql_plan_upsert, list(full_plans))
            if plans:
                self._executemany(cursor, self._sql_plan_meta_upsert, list(plans))
            if actions:
                self._executemany(cursor, self._sql_action_upsert, list(actions))
            if steps:
                self._executemany(cursor, self._sql_step_upsert, list(steps))

    @_wrap_errors("claim_plan")
    def claim_plan(
        self, plan_id: str, from_states: tuple[str, ...], to_state: str = "running"
    ) -> bool:
        """Move a plan to ``to_state`` only if it is in one of ``from_states``.

        A conditional update: of two executors claiming one plan, exactly one wins.

        Returns:
            whether this call moved the plan.
        """
        param = self._db.param
        marks = ", ".join([param] * len(from_states))
        sql = (
            f'UPDATE "{PLANS}" SET "state" = {param} '
            f'WHERE "uuid" = {param} AND "state" IN ({marks})'
        )
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, (to_state, plan_id, *from_states))
            return bool(cursor.rowcount == 1)

    @_wrap_errors("plan_exists")
    def plan_exists(self, plan_id: str) -> bool:
        """Return whether a plan row with this id is stored."""
        cursor = self._db.cursor()
        cursor.execute(f'SELECT 1 FROM "{PLANS}" WHERE "uuid" = {self._db.param}', (plan_id,))
        return cursor.fetchone() is not None

    @_wrap_errors("delete_plans")
    def delete_plans(self, plan_ids: Iterable[str] | str) -> int:
        """Delete plans with their actions, steps, chunks, delayed records and dependencies.

        Returns:
            how many plans were deleted (unknown ids are ignored).
        """
        ids = [plan_ids] if isinstance(plan_ids, str) else list(dict.fromkeys(map(str, plan_ids)))
        deleted = 0
        with self._write_atomic():
            cursor = self._db.cursor()
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                marks = ", ".join([self._db.param] * len(chunk))
                # The foreign keys cascade too; deleting explicitly also cleans a database
                # whose connection was opened without foreign_keys=ON.
                for table in _CHILD_TABLES:
                    cursor.execute(
                        f'DELETE FROM "{table}" WHERE execution_plan_uuid IN ({marks})', chunk
                    )
                cursor.execute(
                    "DELETE FROM dynflow_execution_plan_dependencies "
                    f"WHERE execution_plan_uuid IN ({marks}) OR blocked_by_uuid IN ({marks})",
                    chunk + chunk,
                )
                self._delete_envelope_ids(
                    cursor, [row[0] for row in self._envelope_rows(cursor, chunk)]
                )
                cursor.execute(f'DELETE FROM "{PLANS}" WHERE uuid IN ({marks})', chunk)
                deleted += max(cursor.rowcount, 0)
        return deleted

    # -- envelopes: events accepted for a step, not yet processed ----------------------------
    #
    # ``dynflow_envelopes`` rows whose ``receiver_id`` is ``"<plan id>:<step id>"``; ``data``
    # holds ``encode({"plan_id": ..., "step_id": ..., "payload": ...})``. Other receivers
    # (a world's inbox, say) share the table and are never returned or deleted here.

    @_wrap_errors("add_envelope")
    def add_envelope(
        self, plan_id: str, step_id: int, payload: Any, event_id: str | None = None
    ) -> int:
        """Store an event for step ``step_id`` of plan ``plan_id`` and return its id.

        ``event_id`` names the event for its sender and in the plan's history (e.g. when
        it was not delivered); `envelopes` returns it with ``with_event_ids``.

        The plan row need not exist (the table has no foreign key). Ids grow with insertion
        order among the stored envelopes. On SQLite the id of the envelope with the highest id
        is reused once that envelope is deleted (the column is a rowid without
        ``AUTOINCREMENT``), so delete an envelope only once.

        Raises:
            SerializationError: if ``payload`` cannot be encoded.
            PersistenceError: if the database refuses the write.
        """
        plan_id, step_id = str(plan_id), int(step_id)
        envelope = {"plan_id": plan_id, "step_id": step_id, "payload": payload}
        if event_id is not None:
            envelope["event_id"] = str(event_id)
        data = encode(envelope)
        param = self._db.param
        sql = f'INSERT INTO "{ENVELOPES}" ("receiver_id", "data") VALUES ({param}, {param})'
        params = (f"{plan_id}:{step_id}", data)
        with self._write_atomic():
            cursor = self._db.cursor()
            if self._sqlite:
                cursor.execute(sql, params)
                return int(cursor.lastrowid)
            cursor.execute(sql + ' RETURNING "id"', params)
            return int(cursor.fetchone()[0])

    @_wrap_errors("envelopes")
    def envelopes(
        self, plan_id: str, step_id: int | None = None, *, with_event_ids: bool = False
    ) -> list[tuple[Any, ...]]:
        """Return the pending envelopes of a plan (or of one of its steps), in id order.

        Returns:
            ``(envelope id, step id, payload)`` tuples; with ``with_event_ids``,
            ``(envelope id, step id, payload, event id)`` (``"envelope-<id>"`` for an event
            stored without one).

        Raises:
            CorruptData: if an envelope's data does not decode.
            DataConsistencyError: if it decodes to something that is not an envelope.
        """
        plan_id = str(plan_id)
        cursor = self._db.cursor()
        if step_id is None:
            rows = self._envelope_rows(cursor, [plan_id], with_data=True)
        else:
            cursor.execute(
                f'SELECT "id", "receiver_id", "data" FROM "{ENVELOPES}" '
                f'WHERE "receiver_id" = {self._db.param} ORDER BY "id"',
                (f"{plan_id}:{int(step_id)}",),
            )
            rows = cursor.fetchall()
        envelopes = []
        for envelope_id, receiver_id, blob in rows:
            where = f"execution plan {plan_id}: envelope {envelope_id} ({receiver_id})"
            data = _decode_at(blob, where)
            if not isinstance(data, dict) or "payload" not in data:
                raise DataConsistencyError(f"{where} is a {type(data).__name__} without payload")
            envelope: tuple[Any, ...] = (envelope_id, _receiver(receiver_id)[1], data["payload"])
            if with_event_ids:
                envelope += (str(data.get("event_id") or f"envelope-{envelope_id}"),)
            envelopes.append(envelope)
        return envelopes

    @_wrap_errors("delete_envelopes")
    def delete_envelopes(self, ids: Iterable[int]) -> int:
        """Delete envelopes by id and return how many were deleted (unknown ids are ignored)."""
        unique = list(dict.fromkeys(int(envelope_id) for envelope_id in ids))
        if not unique:
            return 0
        with self._write_atomic():
            return self._delete_envelope_ids(self._db.cursor(), unique)

    @_wrap_errors("pop_envelope")
    def pop_envelope(self, plan_id: str, step_id: int) -> int:
        """Delete the oldest envelope of a step (the event it is now processing).

        Returns:
            how many were deleted (0 or 1).
        """
        param = self._db.param
        receiver = f"{plan_id}:{int(step_id)}"
        sql = (
            f'DELETE FROM "{ENVELOPES}" WHERE "id" = (SELECT MIN("id") FROM "{ENVELOPES}" '
            f'WHERE "receiver_id" = {param})'
        )
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, (receiver,))
            return int(cursor.rowcount)

    @_wrap_errors("clear_envelopes")
    def clear_envelopes(self, plan_id: str, step_id: int) -> int:
        """Delete every envelope of a step (its events die with it); return how many."""
        sql = f'DELETE FROM "{ENVELOPES}" WHERE "receiver_id" = {self._db.param}'
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, (f"{plan_id}:{int(step_id)}",))
            return int(cursor.rowcount)

    # -- coordinator records ---------------------------------------------------------------

    @_wrap_errors("put_record")
    def put_record(
        self, record_class: str, record_id: str, data: bytes | None, owner_id: str | None = None
    ) -> None:
        """Create or replace the coordinator record ``(record_id, record_class)``.

        Coordinator records are small named blobs shared by the processes of one database
        (Dynflow keeps worlds and locks there); ``data`` is stored as given.
        """
        param = self._db.param
        sql = (
            f'INSERT INTO "{COORDINATOR}" ("id", "class", "owner_id", "data") '
            f"VALUES ({param}, {param}, {param}, {param}) "
            'ON CONFLICT ("id", "class") DO UPDATE SET "owner_id" = excluded."owner_id", '
            '"data" = excluded."data"'
        )
        with self._write_atomic():
            self._db.cursor().execute(sql, (record_id, record_class, owner_id, data))

    @_wrap_errors("put_record_data")
    def put_record_data(
        self, record_class: str, record_id: str, data: bytes | None, owner_id: str | None = None
    ) -> None:
        """Create the coordinator record ``(record_id, record_class)`` or replace its data.

        ``owner_id`` is set when the record is created; unlike `put_record`, an existing
        record keeps its owner, and its owner index is not touched, which matters for a
        record rewritten in every transaction (the writer's ledger: a page less per commit).
        """
        param = self._db.param
        sql = (
            f'INSERT INTO "{COORDINATOR}" ("id", "class", "owner_id", "data") '
            f"VALUES ({param}, {param}, {param}, {param}) "
            'ON CONFLICT ("id", "class") DO UPDATE SET "data" = excluded."data"'
        )
        with self._write_atomic():
            self._db.cursor().execute(sql, (record_id, record_class, owner_id, data))

    @_wrap_errors("record")
    def record(self, record_class: str, record_id: str) -> bytes | None:
        """Return the data of the coordinator record ``(record_id, record_class)``, or None."""
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "data" FROM "{COORDINATOR}" WHERE "id" = {param} AND "class" = {param}',
            (record_id, record_class),
        )
        row = cursor.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    @_wrap_errors("delete_record")
    def delete_record(self, record_class: str, record_id: str) -> int:
        """Delete the coordinator record ``(record_id, record_class)``; return how many (0/1)."""
        param = self._db.param
        sql = f'DELETE FROM "{COORDINATOR}" WHERE "id" = {param} AND "class" = {param}'
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, (record_id, record_class))
            return int(cursor.rowcount)

    @_wrap_errors("step_state")
    def step_state(self, plan_id: str, step_id: int | None = None) -> str | None:
        """Return a step's stored state (the plan's with no ``step_id``), or None if absent."""
        param = self._db.param
        cursor = self._db.cursor()
        if step_id is None:
            cursor.execute(f'SELECT "state" FROM "{PLANS}" WHERE "uuid" = {param}', (plan_id,))
        else:
            cursor.execute(
                f'SELECT "state" FROM "{STEPS}" '
                f'WHERE "execution_plan_uuid" = {param} AND "id" = {param}',
                (plan_id, int(step_id)),
            )
        row = cursor.fetchone()
        if row is None and step_id is not None:  # a plan-phase step: in its plan's row
            cursor.execute(f'SELECT "plan_steps" FROM "{PLANS}" WHERE "uuid" = {param}', (plan_id,))
            found = cursor.fetchone()
            if found is not None and found[0] is not None:
                for record in _decode_at(found[0], f"execution plan {plan_id}: plan_steps"):
                    if record[0] == int(step_id):
                        return str(record[2])
        return None if row is None else str(row[0])

    # -- output chunks: an action's append-only streaming output ----------------------------

    @_wrap_errors("add_output_chunks")
    def add_output_chunks(
        self, chunks: Iterable[tuple[str, int, Any, str | None, datetime]]
    ) -> None:
        """Append output chunks in one transaction, in the given order.

        Args:
            chunks: ``(plan id, action id, chunk, kind, timestamp)`` tuples; ``chunk`` is any
                value `encode` accepts, ``kind`` a free label such as ``"stdout"`` (or
                ``None``), ``timestamp`` an aware datetime (a naive one is taken as UTC).
                The plan rows must exist.

        Raises:
            SerializationError: if a chunk cannot be encoded.
            PersistenceError: if the database refuses the write.
        """
        dt = self._dt
        rows = [
            (str(plan_id), int(action_id), encode(chunk), kind, dt(timestamp))
            for plan_id, action_id, chunk, kind, timestamp in chunks
        ]
        if not rows:
            return
        param = self._db.param
        sql = (
            f'INSERT INTO "{CHUNKS}" ("execution_plan_uuid", "action_id", "chunk", "kind", '
            f'"timestamp") VALUES ({", ".join([param] * 5)})'
        )
        with self._write_atomic():
            self._executemany(self._db.cursor(), sql, rows)

    @_wrap_errors("output_chunks")
    def output_chunks(self, plan_id: str, action_id: int) -> list[dict[str, Any]]:
        """Return an action's output chunks in insertion order.

        Returns:
            ``{"chunk": value, "kind": str | None, "timestamp": aware UTC datetime}`` dicts.

        Raises:
            CorruptData: if a stored chunk does not decode.
        """
        plan_id, action_id = str(plan_id), int(action_id)
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "id", "chunk", "kind", "timestamp" FROM "{CHUNKS}" '
            f'WHERE "execution_plan_uuid" = {param} AND "action_id" = {param} ORDER BY "id"',
            (plan_id, action_id),
        )
        where = f"execution plan {plan_id}: action {action_id} output chunk"
        return [
            {
                "chunk": _decode_at(blob, f"{where} {chunk_id}"),
                "kind": kind,
                "timestamp": from_db_datetime(timestamp),
            }
            for chunk_id, blob, kind, timestamp in cursor.fetchall()
        ]

    @_wrap_errors("delete_output_chunks")
    def delete_output_chunks(self, plan_id: str, action_id: int | None = None) -> int:
        """Delete the output chunks of one action, or of the whole plan when ``action_id`` is None.

        Returns:
            how many chunks were deleted.
        """
        param = self._db.param
        sql = f'DELETE FROM "{CHUNKS}" WHERE "execution_plan_uuid" = {param}'
        params: tuple[Any, ...] = (str(plan_id),)
        if action_id is not None:
            sql += f' AND "action_id" = {param}'
            params += (int(action_id),)
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, params)
            return max(cursor.rowcount, 0)

    # -- reads ----------------------------------------------------------------------------

    @_wrap_errors("load_plan")
    def load_plan(self, plan_id: str) -> ExecutionPlan:
        """Return the plan with every field rebuilt from its rows.

        Rows that do not fit together (missing steps or actions, a step of an unknown
        action...) or that fail to decode give a plan with ``valid=False`` and ``exception``
        set to a `StepError` of `DataConsistencyError` or `CorruptData`; its row fields (id,
        label, state, times, history, stored result) are kept, its steps, actions and flows
        are empty (Dynflow's InvalidPlan).

        Raises:
            UnknownPlan: if no plan has this id.
        """
        param = self._db.param
        plan_id = str(plan_id)
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(_select_sql(PLANS, PLAN_COLUMNS) + f" WHERE uuid = {param}", (plan_id,))
            row = cursor.fetchone()
            if row is None:
                raise UnknownPlan(f"no execution plan with id {plan_id!r}")
            cursor.execute(
                _select_sql(ACTIONS, ACTION_COLUMNS)
                + f" WHERE execution_plan_uuid = {param} ORDER BY id",
                (plan_id,),
            )
            action_rows = cursor.fetchall()
            cursor.execute(
                _select_sql(STEPS, STEP_COLUMNS)
                + f" WHERE execution_plan_uuid = {param} ORDER BY id",
                (plan_id,),
            )
            step_rows = cursor.fetchall()
        return self._assemble(row, action_rows, step_rows)

    @_wrap_errors("find_plans")
    def find_plans(
        self,
        *,
        state: Any = None,
        result: Any = None,
        label: Any = None,
        caller_execution_plan_id: str | None = None,
        caller_action_id: int | None = None,
        limit: int | None = 100,
        offset: int = 0,
        order_by: str = "started_at",
        desc: bool = True,
    ) -> list[ExecutionPlan]:
        """Return a page of plans, fully loaded, in three queries whatever the page size.

        Args:
            state: a state or a list of states (a list means any of them, an empty list
                matches nothing).
            result: a result or a list of results, likewise.
            label: a label or a list of labels, likewise.
            caller_execution_plan_id: only plans with an action called by this plan
                (sub-plans); ``caller_action_id`` narrows it to one calling action.
            limit: page size; ``None`` for all.
            offset: how many matching plans to skip.
            order_by: one of `ORDERABLE_COLUMNS`; NULLs sort last in both directions and ties
                are broken by id, ascending.
            desc: descending order.

        Raises:
            ValueError: for an ``order_by`` that is not allowed, ``caller_action_id`` without
                ``caller_execution_plan_id``, or a negative ``limit`` / ``offset``.
        """
        where, params = self._where(
            state, result, label, caller_execution_plan_id, caller_action_id
        )
        order = self._order(order_by, desc)
        page, page_params = self._page(limit, offset)
        page_sql = f'SELECT uuid FROM "{PLANS}"{where}{order}{page}'
        all_params = params + page_params
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(_select_sql(PLANS, PLAN_COLUMNS) + where + order + page, all_params)
            plan_rows = cursor.fetchall()
            if not plan_rows:
                return []
            children: list[dict[str, list[tuple[Any, ...]]]] = []
            for table, columns in ((ACTIONS, ACTION_COLUMNS), (STEPS, STEP_COLUMNS)):
                cursor.execute(
                    _select_sql(table, columns)
                    + f" WHERE execution_plan_uuid IN ({page_sql}) ORDER BY execution_plan_uuid, id",
                    all_params,
                )
                grouped: dict[str, list[tuple[Any, ...]]] = {}
                for child in cursor.fetchall():
                    grouped.setdefault(child[0], []).append(child)
                children.append(grouped)
        actions_by_plan, steps_by_plan = children
        return [
            self._assemble(row, actions_by_plan.get(row[0], []), steps_by_plan.get(row[0], []))
            for row in plan_rows
        ]

    @_wrap_errors("count_plans")
    def count_plans(
        self,
        *,
        state: Any = None,
        result: Any = None,
        label: Any = None,
        caller_execution_plan_id: str | None = None,
        caller_action_id: int | None = None,
    ) -> int:
        """Return how many plans match the filters of `find_plans`."""
        where, params = self._where(
            state, result, label, caller_execution_plan_id, caller_action_id
        )
        cursor = self._db.cursor()
        cursor.execute(f'SELECT COUNT(*) FROM "{PLANS}"{where}', params)
        return int(cursor.fetchone()[0])

    # -- internals: transactions and errors -------------------------------------------------

    def _write_atomic(self) -> Any:
        if self._sqlite:
            return _Atomic(self._db.atomic(lock_type="IMMEDIATE"))
        return _Atomic(self._db.atomic())

    def _read_atomic(self) -> Any:
        if self._postgres:
            return self._db.atomic(isolation_level="REPEATABLE READ")
        return self._db.atomic()

    def _executemany(self, cursor: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self._postgres and psycopg2 is not None:
            psycopg2.extras.execute_batch(cursor, sql, rows, page_size=200)
        else:
            cursor.executemany(sql, rows)

    def _envelope_rows(
        self, cursor: Any, plan_ids: list[str], *, with_data: bool = False
    ) -> list[tuple[Any, ...]]:
        """Return ``(id, receiver_id[, data])`` of the envelopes of ``plan_ids``, in id order.

        Served by the ``receiver_id`` index: on SQLite a ``[plan_id + ":", plan_id + ";")``
        range (``BINARY`` collation, byte order); on PostgreSQL a ``LIKE 'plan_id:%'`` prefix
        match, because a range in a linguistic collation (``en_US``, ICU) does not hold every
        string with that prefix (punctuation is ignored at the first level). The prefix also
        matches a plan whose id extends the given one with ``:...``, so rows are then kept
        only if their receiver id is exactly ``<one of plan_ids>:<integer>``.
        """
        columns = '"id", "receiver_id", "data"' if with_data else '"id", "receiver_id"'
        param = self._db.param
        wanted = set(plan_ids)
        rows: list[tuple[Any, ...]] = []
        step = max(_IN_CHUNK // 2, 1)
        for start in range(0, len(plan_ids), step):
            part = plan_ids[start : start + step]
            if self._sqlite:
                clause = f'("receiver_id" >= {param} AND "receiver_id" < {param})'
                params = [bound for plan_id in part for bound in (f"{plan_id}:", f"{plan_id};")]
            else:
                clause = f"\"receiver_id\" LIKE {param} ESCAPE '!'"
                params = [_like_escape(plan_id) + ":%" for plan_id in part]
            where = " OR ".join([clause] * len(part))
            cursor.execute(
                f'SELECT {columns} FROM "{ENVELOPES}" WHERE {where} ORDER BY "id"', params
            )
            rows.extend(row for row in cursor.fetchall() if _receiver(row[1])[0] in wanted)
        if len(plan_ids) > step:
            rows.sort(key=lambda row: row[0])
        return rows

    def _delete_envelope_ids(self, cursor: Any, ids: list[int]) -> int:
        deleted = 0
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start : start + _IN_CHUNK]
            marks = ", ".join([self._db.param] * len(part))
            cursor.execute(f'DELETE FROM "{ENVELOPES}" WHERE "id" IN ({marks})', part)
            deleted += max(cursor.rowcount, 0)
        return deleted

    def _after_driver_error(self) -> None:
        """Drop this thread's connection if it broke, so the next call reconnects.

        Broken: PostgreSQL lost it (psycopg2 no longer knows its transaction status), or
        SQLite still holds a transaction outside any of ours (a rollback that failed), in
        which every later ``BEGIN`` would fail. Closing a SQLite connection rolls that back.
        """
        db = self._db
        try:
            if db.is_closed() or db.in_transaction():
                return
            left_open = self._sqlite and db.connection().in_transaction
            if left_open or not db.is_connection_usable():
                db.close()
        except Exception:  # the connection is beyond closing cleanly; forget it
            state = getattr(db, "_state", None)
            if state is not None:
                state.reset()

    def _describe(self) -> str:
        if self.url is not None:
            return redact_url(self.url)
        return f"{type(self._db).__name__}({getattr(self._db, 'database', '?')!r})"

    # -- internals: rows out --------------------------------------------------------------

    @staticmethod
    def _naive_utc(value: datetime | None) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        if value.tzinfo is UTC:
            return value.replace(tzinfo=None)
        return value.astimezone(UTC).replace(tzinfo=None)

    @staticmethod
    def _sqlite_datetime(value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.isoformat(" ", "microseconds")[:26]  # drop "+00:00"
        return value.isoformat(" ", "microseconds")

    def _plan_statement(self, plan: ExecutionPlan) -> tuple[str, tuple[Any, ...]]:
        has_flows, values = self.plan_row_of(self.plan_snapshot(plan, full=True))
        return (self._sql_plan_upsert if has_flows else self._sql_plan_meta_upsert), values

    def _action_row(self, action: ActionRecord) -> tuple[Any, ...]:
        return self.action_row_of(self.action_snapshot(action))

    def _step_row(self, step: Step) -> tuple[Any, ...]:
        return self.step_row_of(self.step_snapshot(step))

    # -- internals: queries ---------------------------------------------------------------

    def _where(
        self,
        state: Any,
        result: Any,
        label: Any,
        caller_execution_plan_id: str | None,
        caller_action_id: int | None,
    ) -> tuple[str, list[Any]]:
        param = self._db.param
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("state", state), ("result", result), ("label", label)):
            values = _as_values(value)
            if values is None:
                continue
            if not values:
                clauses.append("1 = 0")
            elif len(values) == 1:
                clauses.append(f'"{column}" = {param}')
            else:
                clauses.append(f'"{column}" IN ({", ".join([param] * len(values))})')
            params.extend(values)
        if caller_action_id is not None and caller_execution_plan_id is None:
            raise ValueError("caller_action_id needs caller_execution_plan_id")
        if caller_execution_plan_id is not None:
            sub = f'SELECT execution_plan_uuid FROM "{ACTIONS}" WHERE caller_execution_plan_id = {param}'
            params.append(str(caller_execution_plan_id))
            if caller_action_id is not None:
                sub += f" AND caller_action_id = {param}"
                params.append(int(caller_action_id))
            clauses.append(f"uuid IN ({sub})")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    @staticmethod
    def _order(order_by: str, desc: bool) -> str:
        column = ORDERABLE_COLUMNS.get(order_by) if isinstance(order_by, str) else None
        if column is None:
            raise ValueError(
                f"cannot order execution plans by {order_by!r}; "
                f"allowed: {', '.join(ORDERABLE_COLUMNS)}"
            )
        direction = "DESC" if desc else "ASC"
        if column == "uuid":
            return f' ORDER BY "uuid" {direction}'
        # "(x IS NULL)" first puts NULLs last in both directions, on SQLite and PostgreSQL.
        return f' ORDER BY ("{column}" IS NULL), "{column}" {direction}, "uuid" ASC'

    def _page(self, limit: int | None, offset: int) -> tuple[str, list[Any]]:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be None or an int >= 0, not {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, not {offset!r}")
        param = self._db.param
        if limit is None:
            if not offset:
                return "", []
            if self._sqlite:
                return f" LIMIT -1 OFFSET {param}", [offset]
            return f" OFFSET {param}", [offset]
        return f" LIMIT {param} OFFSET {param}", [limit, offset]

    # -- internals: rows in ---------------------------------------------------------------

    def _assemble(
        self,
        row: tuple[Any, ...],
        action_rows: list[tuple[Any, ...]],
        step_rows: list[tuple[Any, ...]],
    ) -> ExecutionPlan:
        (
            plan_id,
            state,
            result,
            label,
            root_plan_step_id,
            started_at,
            ended_at,
            real_time,
            execution_time,
            run_flow,
            finalize_flow,
            plan_steps_blob,
            history_blob,
        ) = row
        plan = ExecutionPlan(
            id=plan_id,
            label=label,
            started_at=from_db_datetime(started_at),
            ended_at=from_db_datetime(ended_at),
            real_time=real_time or 0.0,
            execution_time=execution_time or 0.0,
            root_plan_step_id=root_plan_step_id,
        )
        plan.stored_result = Result(result) if result in Result._value2member_map_ else None
        problems: list[BaseException] = []
        try:
            plan.state = PlanState(state)
        except ValueError:
            plan.state = PlanState.STOPPED  # nothing may act on a plan we cannot read
            problems.append(
                DataConsistencyError(f"execution plan {plan_id}: unknown state {state!r}")
            )
        try:
            plan.history = self._history(plan_id, history_blob)
        except (CorruptData, DataConsistencyError) as exc:
            problems.append(exc)
        if not problems:
            try:
                # Plan-phase steps kept in the plan row come first: a row of the same step
                # (a plan stored before schema 2) would win.
                step_rows = [*_plan_step_rows(plan_id, plan_steps_blob), *step_rows]
                self._fill(plan, run_flow, finalize_flow, action_rows, step_rows)
            except (CorruptData, DataConsistencyError) as exc:
                problems.append(exc)
        if problems:
            plan.steps, plan.actions = {}, {}
            plan.run_flow, plan.finalize_flow = Concurrence(), Sequence()
            plan.valid = False
            plan.exception = StepError.from_exception(problems[0])
        return plan

    def _history(self, plan_id: str, blob: Any) -> list[HistoryEntry]:
        if blob is None:
            return []
        data = _decode_at(blob, f"execution plan {plan_id}: execution_history")
        try:
            return [HistoryEntry.from_dict(entry) for entry in data]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataConsistencyError(
                f"execution plan {plan_id}: execution_history is malformed: {exc!r}"
            ) from exc

    def _fill(
        self,
        plan: ExecutionPlan,
        run_flow: Any,
        finalize_flow: Any,
        action_rows: list[tuple[Any, ...]],
        step_rows: list[tuple[Any, ...]],
    ) -> None:
        plan_id = plan.id
        where = f"execution plan {plan_id}"
        if run_flow is not None:
            plan.run_flow = _flow_at(run_flow, f"{where}: run_flow")
        if finalize_flow is not None:
            plan.finalize_flow = _flow_at(finalize_flow, f"{where}: finalize_flow")  # type: ignore[assignment]
        actions: dict[int, ActionRecord] = {}
        for (
            _,
            action_id,
            class_name,
            caller_plan,
            caller_action,
            plan_step_id,
            run_step_id,
            finalize_step_id,
            input_blob,
            output_blob,
        ) in action_rows:
            at = f"{where}: action {action_id}"
            actions[action_id] = ActionRecord(
                id=action_id,
                execution_plan_id=plan_id,
                action_class_name=class_name,
                input=_payload_at(input_blob, f"{at} input"),
                output=_payload_at(output_blob, f"{at} output"),
                plan_step_id=plan_step_id,
                run_step_id=run_step_id,
                finalize_step_id=finalize_step_id,
                caller_execution_plan_id=caller_plan,
                caller_action_id=caller_action,
            )
        steps: dict[int, Step] = {}
        missing_actions: dict[int, list[str]] = {}
        for (
            _,
            step_id,
            action_id,
            state,
            phase,
            started_at,
            ended_at,
            real_time,
            execution_time,
            progress_done,
            progress_weight,
            attempts,
            queue,
            action_class,
            error_blob,
            children_blob,
            retries,
        ) in step_rows:
            at = f"{where}: step {step_id}"
            try:
                step_state, step_phase = StepState(state), Phase(phase)
            except ValueError as exc:
                raise DataConsistencyError(f"{at}: {exc}") from None
            error = None
            if error_blob is not None:
                # Decoded already (a dict) when it comes from the plan row's plan_steps.
                data = (
                    error_blob
                    if isinstance(error_blob, dict)
                    else _decode_at(error_blob, f"{at} error")
                )
                try:
                    error = StepError.from_dict(data)
                except (KeyError, TypeError, AttributeError) as exc:
                    raise DataConsistencyError(f"{at}: malformed error {exc!r}") from None
            children: list[int] | tuple[int, ...]
            if isinstance(children_blob, list):  # from the plan row's plan_steps
                children = children_blob
            else:
                children = (
                    [] if children_blob is None else _decode_at(children_blob, f"{at} children")
                )
            children = children or ()  # as planned: a leaf step shares the empty tuple
            action = actions.get(action_id)
            if action is None:
                missing_actions.setdefault(action_id, []).append(f"step {step_id}")
            steps[step_id] = Step(
                id=step_id,
                execution_plan_id=plan_id,
                action_id=action_id,
                action_class_name=action_class or (action.action_class_name if action else ""),
                phase=step_phase,
                state=step_state,
                error=error,
                started_at=from_db_datetime(started_at),
                ended_at=from_db_datetime(ended_at),
                real_time=real_time or 0.0,
                execution_time=execution_time or 0.0,
                progress_done=progress_done or 0.0,
                progress_weight=_number(progress_weight),  # type: ignore[arg-type]
                attempts=attempts or 0,
                retries=retries or 0,
                children=children,
                queue=queue or "default",
                action=action,
            )
        missing_steps: dict[int, list[str]] = {}

        def need(step_id: int | None, referrer: str) -> None:
            if step_id is not None and step_id not in steps:
                missing_steps.setdefault(step_id, []).append(referrer)

        need(plan.root_plan_step_id, "root_plan_step_id")
        for action in actions.values():
            need(action.plan_step_id, f"action {action.id}")
            need(action.run_step_id, f"action {action.id}")
            need(action.finalize_step_id, f"action {action.id}")
        for step in steps.values():
            for child in step.children:
                need(child, f"step {step.id} children")
        for name, flow in (("run_flow", plan.run_flow), ("finalize_flow", plan.finalize_flow)):
            for step_id in flow.all_step_ids():
                need(step_id, name)
        if missing_steps or missing_actions:
            parts = []
            if missing_steps:
                parts.append("missing steps: " + _describe_missing(missing_steps))
            if missing_actions:
                parts.append("missing actions: " + _describe_missing(missing_actions))
            raise DataConsistencyError(f"{where} is inconsistent; " + "; ".join(parts))
        plan.actions = actions
        plan.steps = dict(sorted(steps.items()))  # by id, wherever each step was kept


def row_steps(steps: Iterable[Step], *, new: bool = False) -> list[Step]:
    """Return the steps of ``steps`` that a plan's full row does not carry (see
    `Storage.plan_snapshot`): not plan-phase, and for a ``new`` plan not pending either.

    Why a new plan's pending steps go in its row: W1's plans are stored with ten steps that
    will each be written again once they run; as rows, their inserts took a sixth of the
    writer's time.
    """
    if new:
        return [s for s in steps if s.phase != Phase.PLAN and s.state != StepState.PENDING]
    return [step for step in steps if step.phase != Phase.PLAN]


def _plan_step_record(step: Step) -> tuple[Any, ...]:
    """Return a step as kept in its plan row: its row's snapshot without the plan id.

    Its times stay integer microseconds since the epoch (`_micros`): no formatting in the
    writer nor parsing on load. Rows written before kept ISO text there; both load
    (`pydynflow.storage.models.from_db_datetime`). Encoded as JSON, its tuples are arrays.
    """
    return Storage.step_snapshot(step)[1:]


_OLDEST_RECORD = STEP_COLUMNS.index("retries")  # step columns of a schema-3 plan row record


def _plan_step_rows(plan_id: str, blob: Any) -> list[tuple[Any, ...]]:
    """Return the plan-phase steps kept in a plan row as step rows (``[]`` if none)."""
    if blob is None:
        return []
    records = _decode_at(blob, f"execution plan {plan_id}: plan_steps")
    try:
        # A record from before the last columns were added is that much shorter: those
        # columns take their defaults (None).
        rows = [(plan_id, *record) for record in records]
        if any(not _OLDEST_RECORD <= len(row) <= len(STEP_COLUMNS) for row in rows):
            raise ValueError(f"a record is not {len(STEP_COLUMNS) - 1} values long")
        rows = [row + (None,) * (len(STEP_COLUMNS) - len(row)) for row in rows]
    except (TypeError, ValueError) as exc:
        raise DataConsistencyError(
            f"execution plan {plan_id}: plan_steps is malformed: {exc}"
        ) from None
    return rows


def _describe_missing(missing: dict[int, list[str]]) -> str:
    return ", ".join(
        f"{key} (referenced by {', '.join(dict.fromkeys(referrers))})"
        for key, referrers in sorted(missing.items())
    )


def _decode_at(blob: Any, where: str) -> Any:
    try:
        return decode(blob)
    except CorruptData as exc:
        raise CorruptData(f"{where}: {exc}") from exc


def _payload_at(blob: Any, where: str) -> dict[str, Any]:
    if blob is None:
        return {}
    value = _decode_at(blob, where)
    if not isinstance(value, dict):
        raise DataConsistencyError(f"{where} is a {type(value).__name__}, not a dict")
    return value


def _flow_at(blob: Any, where: str) -> Flow:
    data = _decode_at(blob, where)
    try:
        return decode_flow(data)
    except (UnknownIdentifier, TypeError, ValueError) as exc:
        raise DataConsistencyError(f"{where}: {exc}") from exc


def _receiver(receiver_id: str) -> tuple[str | None, int]:
    """Split an envelope's ``"<plan id>:<step id>"``; ``(None, 0)`` for any other receiver."""
    plan_id, sep, step = receiver_id.rpartition(":")
    if not sep:
        return None, 0
    try:
        return plan_id, int(step)
    except ValueError:
        return None, 0


def _like_escape(text: str) -> str:
    """Escape ``text`` for a ``LIKE ... ESCAPE '!'`` pattern (no backslash: it would depend on
    PostgreSQL's ``standard_conforming_strings``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def redact_url(url: str) -> str:
    """Return ``url`` without its password (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
