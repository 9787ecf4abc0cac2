"""An integration: a separate process that starts a release and signs it off.

It opens a client world (``executor=False``) on the release service's database, triggers a
`Release`, waits until its sign-off step waits, sends the sign-off event (as a web hook
receiving a person's approval would), and waits for the release to end. It executes
nothing itself: the service (`examples/release_actions.py` under ``pydynflow worker``)
does, in its own processes.

Run it: ``python examples/release_webhook.py [DB_URL] [VERSION]`` (default:
``sqlite:///releases.db``, ``1.0``), with the service running on the same database
(a SQLite path is relative to the directory each process runs in: give both the same).
"""

from __future__ import annotations

import sys
import time

from release_actions import Publish, Release, SignOff

from pydynflow import World


def main(db: str = "sqlite:///releases.db", version: str = "1.0") -> int:
    with World(db, executor=False) as client:
        triggered = client.trigger(Release, version)
        print(f"release {version} started: plan {triggered.id}")
        step_id = next(
            step.id
            for step in client.load(triggered.id).steps.values()
            if step.phase == "run" and step.action_class is SignOff
        )
        while client.load(triggered.id).steps[step_id].state != "suspended":
            time.sleep(0.05)  # the service gets there; a web hook would come later (noqa: sleep-ok)
        client.event(triggered.id, step_id, {"by": "ada"})
        print(f"signed off step {step_id} as ada")
        plan = triggered.wait(timeout=60)
        publish = next(s for s in plan.steps.values() if s.action_class is Publish)
        print(f"release {version}: {plan.state} / {plan.result}, published {publish.output}")
        return 0 if plan.result == "success" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
