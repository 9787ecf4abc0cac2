"""Wait for a person's approval: an async step that parks until an event arrives.

`ChangeRequest` asks an (in-process, simulated) approval service to review a change, then
awaits the decision with ``self.wait_for_event``; while it waits it holds no thread. The
service answers from its own thread with ``world.event``, as a web hook or a message
consumer of a real integration would, addressing the step the request named.

A coroutine's locals do not survive a crash: after a restart ``run`` starts again from the
top. So the step records ``output["requested"]`` before it awaits (the output is stored when
it parks) and does not ask again when it is already set.

Run it: ``python examples/wait_for_approval.py [DB_URL]`` (default: ``pydynflow.db`` here).
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

from pydynflow import Action, ExecutionPlan, World

REVIEW_TIMEOUT = 60.0  # seconds the step waits for a decision before it gives up

# The simulated approval service's inbox: requests naming the step to answer.
requests: queue.Queue[dict[str, Any] | None] = queue.Queue()


class ChangeRequest(Action):
    """Ask for approval of a change, wait for the decision, then apply it (or not)."""

    label = "change request"

    def plan(self, change: str, approver: str) -> None:
        self.plan_self({"change": change, "approver": approver})

    async def run(self) -> None:
        if not self.output.get("requested"):  # a restarted run must not ask twice
            ref = self.suspended_ref  # where the answer must be sent
            requests.put(
                {
                    "plan_id": ref.execution_plan_id,
                    "step_id": ref.step_id,
                    "change": self.input["change"],
                    "approver": self.input["approver"],
                }
            )
            self.output["requested"] = True  # stored when the step parks, below
        try:
            decision = await self.wait_for_event(timeout=REVIEW_TIMEOUT)
        except TimeoutError:
            self.output["status"] = "expired"
            return
        self.output["decision"] = decision
        if decision["approved"]:
            self.output["status"] = f"applied: {self.input['change']}"
        else:
            self.output["status"] = f"rejected: {decision['reason']}"


def approval_service(world: World) -> None:
    """Answer each request as an approver would, through ``world.event``."""
    while (request := requests.get()) is not None:
        print(f"approval service: {request['approver']} reviews {request['change']!r}")
        decision = {"approved": True, "by": request["approver"], "reason": "looks good"}
        world.event(request["plan_id"], request["step_id"], decision)


def main(db: str = "sqlite:///pydynflow.db") -> ExecutionPlan:
    """Trigger a change request, let the service approve it, print how it ended."""
    with World(db) as world:
        service = threading.Thread(target=approval_service, args=(world,), daemon=True)
        service.start()
        triggered = world.trigger(ChangeRequest, "deploy v2.1 to production", "ada")
        print(f"triggered change request: plan {triggered.id}")
        plan = triggered.wait(timeout=REVIEW_TIMEOUT + 30)
        requests.put(None)  # stop the service
        service.join()
        output = plan.actions[1].output
        print(f"plan {plan.state} / {plan.result}")
        print(f"decision: {output.get('decision')}")
        print(f"status: {output['status']}")
        print(f"the plan is stored in {world.db} (plan id {plan.id})")
        return plan


if __name__ == "__main__":
    main(*sys.argv[1:])
