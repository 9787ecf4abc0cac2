"""peewee models of the ``dynflow_*`` tables (Dynflow's schema, appendix B, without legacy columns).

The models are not bound to a database: a process may use several stores at once (a SQLite
file and a PostgreSQL server, say), so a query names its database when it runs
(``Model.select().execute(database)``, ``SchemaManager(Model, database)``) or binds the models
for a block with ``database.bind_ctx(ALL_MODELS)``. The hot paths of `pydynflow.storage.Storage`
use hand-written SQL on these tables; the models describe the latest schema, which the
migrations build (`pydynflow.storage.migrations`; a test checks that they agree).

Times are stored as naive UTC (``TIMESTAMP`` on PostgreSQL, ISO text on SQLite) and always
returned as aware UTC datetimes. Blob columns hold `pydynflow.storage.codec` frames.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import peewee

__all__ = [
    "ALL_MODELS",
    "ActionModel",
    "CoordinatorRecordModel",
    "DelayedPlanModel",
    "EnvelopeModel",
    "ExecutionPlanDependencyModel",
    "ExecutionPlanModel",
    "OutputChunkModel",
    "StepModel",
    "UTCDateTimeField",
    "from_db_datetime",
    "to_db_datetime",
]


def to_db_datetime(value: datetime | None) -> datetime | None:
    """Return ``value`` as a naive UTC datetime (a naive input is taken to be UTC already)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_db_datetime(value: Any) -> datetime | None:
    """Return a stored time (naive UTC datetime, ISO text, or integer microseconds since the
    epoch as plan rows keep their steps' times) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, int):
        return _EPOCH + timedelta(microseconds=value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


class UTCDateTimeField(peewee.DateTimeField):
    """A timestamp stored as naive UTC, read back as an aware UTC datetime."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            naive = to_db_datetime(value)
            assert naive is not None
            return naive.isoformat(sep=" ", timespec="microseconds")
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        return from_db_datetime(value)


class _Base(peewee.Model):
    class Meta:
        database = None  # bound at run time, see the module docstring
        legacy_table_names = False


class ExecutionPlanModel(_Base):
    """One row per execution plan: metadata columns plus the flows and history blobs."""

    uuid = peewee.CharField(max_length=36, primary_key=True)
    state = peewee.CharField(max_length=32)  # indexes: see Meta (schema 6)
    result = peewee.CharField(max_length=32, null=True)
    label = peewee.TextField(null=True, index=True)
    root_plan_step_id = peewee.IntegerField(null=True)
    started_at = UTCDateTimeField(null=True)
    ended_at = UTCDateTimeField(null=True)
    real_time = peewee.DoubleField(null=True)
    execution_time = peewee.DoubleField(null=True)
    run_flow = peewee.BlobField(null=True)
    finalize_flow = peewee.BlobField(null=True)
    # The plan-phase steps, which never change after planning, as one list (schema 2): a
    # row each would cost 11 of a 10-step chain's 33 rows and split its run steps' rows
    # across more pages. Plans stored before schema 2 keep theirs in dynflow_steps.
    plan_steps = peewee.BlobField(null=True)
    execution_history = peewee.BlobField(null=True)

    class Meta:
        table_name = "dynflow_execution_plans"
        # Schema 6, for plan lists: filter by the first column, order by start time (ties
        # by id), each a walk along one index (`pydynflow.storage.listing`).
        indexes = (
            (("state", "started_at", "uuid"), False),
            (("result", "started_at", "uuid"), False),
            (("started_at", "uuid"), False),
            (("ended_at", "uuid"), False),
        )


class ActionModel(_Base):
    """One row per action of a plan; ``class`` is the registered ``module.QualName``."""

    execution_plan = peewee.ForeignKeyField(
        ExecutionPlanModel,
        column_name="execution_plan_uuid",
        on_delete="CASCADE",
        index=False,  # the primary key leads with it
        backref="+",
    )
    id = peewee.IntegerField()
    action_class = peewee.TextField(column_name="class")
    caller_execution_plan_id = peewee.CharField(max_length=36, null=True)
    caller_action_id = peewee.IntegerField(null=True)
    plan_step_id = peewee.IntegerField(null=True)
    run_step_id = peewee.IntegerField(null=True)
    finalize_step_id = peewee.IntegerField(null=True)
    input = peewee.BlobField(null=True)
    output = peewee.BlobField(null=True)

    class Meta:
        table_name = "dynflow_actions"
        primary_key = peewee.CompositeKey("execution_plan", "id")
        indexes = ((("caller_execution_plan_id", "caller_action_id"), False),)


# Schema 6: the classes of root actions (action 1 of each plan) and their plans, for plan
# lists filtered by class.
ActionModel.add_index(
    ActionModel.index(
        ActionModel.action_class,
        ActionModel.execution_plan,
        name="dynflow_actions_root_class",
        where=(ActionModel.id == 1),
    )
)


class StepModel(_Base):
    """One row per step (one phase of one action)."""

    execution_plan = peewee.ForeignKeyField(
        ExecutionPlanModel,
        column_name="execution_plan_uuid",
        on_delete="CASCADE",
        index=False,
        backref="+",
    )
    id = peewee.IntegerField()
    action_id = peewee.IntegerField()
    state = peewee.CharField(max_length=32)  # no index: no query reads steps by state
    phase = peewee.CharField(max_length=16)
    started_at = UTCDateTimeField(null=True)
    ended_at = UTCDateTimeField(null=True)
    real_time = peewee.DoubleField(null=True)
    execution_time = peewee.DoubleField(null=True)
    progress_done = peewee.DoubleField(null=True)
    progress_weight = peewee.DoubleField(null=True)
    attempts = peewee.IntegerField(default=0)
    retries = peewee.IntegerField(default=0)
    queue = peewee.TextField(null=True)
    action_class = peewee.TextField(null=True)
    error = peewee.BlobField(null=True)
    children = peewee.BlobField(null=True)

    class Meta:
        table_name = "dynflow_steps"
        primary_key = peewee.CompositeKey("execution_plan", "id")


class DelayedPlanModel(_Base):
    """A plan waiting for its ``start_at`` (or for the plans it is chained after)."""

    execution_plan = peewee.ForeignKeyField(
        ExecutionPlanModel,
        column_name="execution_plan_uuid",
        primary_key=True,
        on_delete="CASCADE",
        backref="+",
    )
    start_at = UTCDateTimeField(null=True, index=True)
    start_before = UTCDateTimeField(null=True)
    frozen = peewee.BooleanField(default=False)
    serialized_args = peewee.BlobField(null=True)

    class Meta:
        table_name = "dynflow_delayed_plans"


class ExecutionPlanDependencyModel(_Base):
    """``execution_plan_uuid`` may start only once ``blocked_by_uuid`` has stopped."""

    execution_plan = peewee.ForeignKeyField(
        ExecutionPlanModel,
        column_name="execution_plan_uuid",
        on_delete="CASCADE",
        index=True,
        backref="+",
    )
    blocked_by = peewee.ForeignKeyField(
        ExecutionPlanModel,
        column_name="blocked_by_uuid",
        on_delete="CASCADE",
        index=True,
        backref="+",
    )

    class Meta:
        table_name = "dynflow_execution_plan_dependencies"
        primary_key = peewee.CompositeKey("execution_plan", "blocked_by")


class EnvelopeModel(_Base):
    """A message for a world (the database connector's inbox)."""

    id = peewee.BigAutoField()
    receiver_id = peewee.CharField(max_length=255, index=True)
    data = peewee.BlobField()

    class Meta:
        table_name = "dynflow_envelopes"


class CoordinatorRecordModel(_Base):
    """A coordinator record (a world or a lock), unique by ``(id, class)``."""

    id = peewee.CharField(max_length=255)
    record_class = peewee.CharField(max_length=255, column_name="class")
    owner_id = peewee.CharField(max_length=255, null=True, index=True)
    data = peewee.BlobField(null=True)

    class Meta:
        table_name = "dynflow_coordinator_records"
        primary_key = peewee.CompositeKey("id", "record_class")


class WorldModel(_Base):
    """A world sharing the database: who it is, and when it last said it was alive."""

    id = peewee.CharField(max_length=36, primary_key=True)
    name = peewee.TextField()
    executor = peewee.BooleanField()
    queues = peewee.TextField()  # JSON: {"queue": pool size}
    pid = peewee.IntegerField()
    hostname = peewee.TextField()
    started_at = UTCDateTimeField()
    last_seen = UTCDateTimeField()
    validity_timeout = peewee.DoubleField()  # seconds of silence after which it is dead

    class Meta:
        table_name = "dynflow_worlds"


class OutputChunkModel(_Base):
    """One appended chunk of an action's streaming output."""

    id = peewee.BigAutoField()
    execution_plan = peewee.ForeignKeyField(
        ExecutionPlanModel,
        column_name="execution_plan_uuid",
        on_delete="CASCADE",
        index=False,  # covered by the (execution_plan_uuid, action_id) index
        backref="+",
    )
    action_id = peewee.IntegerField()
    chunk = peewee.BlobField()
    kind = peewee.CharField(max_length=255, null=True)
    timestamp = UTCDateTimeField()

    class Meta:
        table_name = "dynflow_output_chunks"
        indexes = ((("execution_plan", "action_id"), False),)


ALL_MODELS: tuple[type[peewee.Model], ...] = (
    ExecutionPlanModel,
    ActionModel,
    StepModel,
    DelayedPlanModel,
    ExecutionPlanDependencyModel,
    EnvelopeModel,
    CoordinatorRecordModel,
    OutputChunkModel,
    WorldModel,
)
"""Every model, parents before children (the order their tables can be created in)."""
