"""The exception tree: one root, `DynflowError`, and a shallow set of children."""

from __future__ import annotations


class DynflowError(Exception):
    """Root of every error pydynflow raises on purpose."""


class SerializationError(DynflowError, TypeError):
    """Raise when input, output or an event is not JSON-serialisable."""


class UnknownPlan(DynflowError, LookupError):
    """Raise when no execution plan has the given id."""


class UnknownStep(DynflowError, LookupError):
    """Raise when an execution plan has no step with the given id."""


class UnknownAction(DynflowError, LookupError):
    """Raise when a stored action class does not resolve to a registered `Action`."""


class EventRejected(DynflowError):
    """Raise when an event is sent to a step that is not waiting for one."""


class InvalidTransition(DynflowError):
    """Raise when a plan or step is asked to move to a state its table forbids."""


class PlanningError(DynflowError):
    """Raise when an action cannot be planned (bad arguments, misuse of the planning DSL)."""


class PersistenceError(DynflowError):
    """Raise when the store cannot read or write what it was asked to."""


class FatalPersistenceError(PersistenceError):
    """Raise when the database stayed unwritable for the writer's whole ``fatal_timeout``.

    Passing failures (a lost connection, a locked or full database) are retried until then;
    this one means persistence is gone for good, and the world that sees it should stop.
    """


class CorruptData(PersistenceError):
    """Raise when a stored payload fails its magic, version or checksum check."""


class DataConsistencyError(PersistenceError):
    """Raise when stored rows of one execution plan do not fit together (e.g. missing steps)."""


class IdentifierTaken(DynflowError):
    """Raise when a flow identifier is registered twice."""


class UnknownIdentifier(DynflowError, LookupError):
    """Raise when a flow class or identifier has no registered encoding."""


class UnknownError(DynflowError):
    """Stand in for a stored exception class that no longer exists.

    ``str(UnknownError)`` renders as ``UnknownError[<original name>]``, as Dynflow's
    ``Dynflow::Errors::UnknownError[...]`` does.
    """

    def __init__(self, original_class: str, message: str) -> None:
        super().__init__(message)
        self.original_class = original_class
        self.message = message

    @property
    def class_name(self) -> str:
        """Return the rendered class name, ``UnknownError[<original>]``."""
        return f"{type(self).__module__}.UnknownError[{self.original_class}]"

    def __str__(self) -> str:
        return f"{self.class_name}: {self.message}"


class AlreadyRunning(DynflowError):
    """Raise when a plan asked to execute runs already (here, or on another world)."""


class AbnormalTermination(DynflowError):
    """Recorded on a step that was running when its process died."""
