"""Action mixins with Dynflow's semantics, one module each: `Cancellable`, `Polling`,
`Singleton`, `WithSubPlans`.

Use them as bases: ``class Deploy(Polling, Cancellable, Action)`` (or just
``class Deploy(Polling)``: each mixin is an `Action`).
"""

from pydynflow.mixins.cancellable import Cancellable, is_cancellable
from pydynflow.mixins.polling import Polling
from pydynflow.mixins.singleton import Singleton, is_singleton
from pydynflow.mixins.sub_plans import SubPlanFailed, WithSubPlans

__all__ = [
    "Cancellable",
    "Polling",
    "Singleton",
    "SubPlanFailed",
    "WithSubPlans",
    "is_cancellable",
    "is_singleton",
]
