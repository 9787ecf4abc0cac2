"""Mask a secret in what readers see: a ``present`` middleware over a world's plans.

`CreateUser` takes a ``password`` in its input: its run needs it, and the database keeps it
as given. `MaskPassword`, a world middleware, defines only the ``present`` hook: whenever a
plan is handed to a reader (`World.load`, `World.plans`, `Triggered.wait`, and so the CLI),
each action is rebuilt for presentation and the hook replaces its ``password`` with
``***``. Nothing stored changes: a world without the middleware reads the real value, and
a plan run again (``resume``) gets it too.

Run it: ``python examples/mask_secrets.py [DB_URL]`` (default: ``pydynflow.db`` here).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

from pydynflow import Action, ExecutionPlan, Middleware, World


class MaskPassword(Middleware):
    """Show ``***`` instead of an action's ``password`` input."""

    def present(self, call_next: Any) -> Any:
        if "password" in self.action.input:
            self.action.input["password"] = "***"
        return call_next()


class CreateUser(Action):
    """Create an account: store a hash of the password, never the password in the output."""

    label = "create user"

    def plan(self, username: str, password: str) -> None:
        self.plan_self(username=username, password=password)

    def run(self) -> None:
        digest = hashlib.sha256(self.input["password"].encode()).hexdigest()
        self.output["password_sha256"] = digest[:16]


def main(argv: list[str] | None = None) -> ExecutionPlan:
    """Create a user on a world that masks passwords; return the plan as readers see it."""
    args = sys.argv[1:] if argv is None else argv
    db = args[0] if args else "sqlite:///pydynflow.db"
    with World(db, middleware=[MaskPassword]) as world:
        plan = world.trigger(CreateUser, "ada", "correct horse").wait(30)
        print(f"plan {plan.id}: {plan.state} / {plan.result}, stored in {db}")
        print(f"what wait() shows:  {plan.actions[1].input}")
        print(f"what load() shows:  {world.load(plan.id).actions[1].input}")
        print(f"what plans() shows: {world.plans(label='create user')[0].actions[1].input}")
        print(f"the run got the real password: {plan.actions[1].output}")
    return plan


if __name__ == "__main__":
    main()
