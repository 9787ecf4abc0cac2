"""pydynflow: a durable workflow engine for Python, a port of Ruby's Dynflow on actors.

Everything public is importable from here: ``from pydynflow import Action, World``.
"""

from pydynflow.action import Action
from pydynflow.delayed import ArgsSerializer, DelayedPlan
from pydynflow.errors import (
    CorruptData,
    DataConsistencyError,
    DynflowError,
    EventRejected,
    InvalidTransition,
    PersistenceError,
    PlanningError,
    SerializationError,
    UnknownAction,
    UnknownPlan,
    UnknownStep,
)
from pydynflow.flows import Atom, Concurrence, Flow, Sequence
from pydynflow.hooks import on_plan
from pydynflow.middleware import Middleware
from pydynflow.mixins import Cancellable, Polling, Singleton, WithSubPlans
from pydynflow.plan import ActionRecord, ExecutionPlan, HistoryEntry, Step, StepError
from pydynflow.references import OutputReference
from pydynflow.rescue import Fail, Pause, RescuePolicy, Retry, Skip
from pydynflow.states import Phase, PlanState, Result, StepState
from pydynflow.triggered import Triggered
from pydynflow.world import World
from pydynflow.world_info import WorldInfo

__all__ = [
    "Action",
    "ActionRecord",
    "ArgsSerializer",
    "Atom",
    "Cancellable",
    "Concurrence",
    "CorruptData",
    "DataConsistencyError",
    "DelayedPlan",
    "DynflowError",
    "EventRejected",
    "ExecutionPlan",
    "Fail",
    "Flow",
    "HistoryEntry",
    "InvalidTransition",
    "Middleware",
    "OutputReference",
    "Pause",
    "PersistenceError",
    "Phase",
    "PlanState",
    "PlanningError",
    "Polling",
    "RescuePolicy",
    "Result",
    "Retry",
    "SerializationError",
    "Sequence",
    "Singleton",
    "Skip",
    "Step",
    "StepError",
    "StepState",
    "Triggered",
    "UnknownAction",
    "UnknownPlan",
    "UnknownStep",
    "World",
    "WithSubPlans",
    "WorldInfo",
    "on_plan",
]

__version__ = "0.1.0"
