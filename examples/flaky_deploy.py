"""Deploy through a flaky API: `Retry` restarts the failing steps, `Skip` drops an optional one.

A release uploads an artifact, rolls it out to two hosts in concurrence, then checks their
health while (optionally) warming a cache. Every step calls a simulated deployment API that
answers "503 Service Unavailable" to the first ``--failures`` calls of each operation
(default 2). Those steps have ``rescue = Retry(3, backoff=0.05)``: each failure restarts the
step after a short backoff (on the world's clock, no thread held), with the output the
failed attempt stored, until the API answers. The cache service is down for good, but
`WarmCache` has ``rescue = Skip``: it is skipped and the plan ends ``stopped`` with result
``warning`` instead of pausing for a person.

The steps run in worker processes by default (``executor="processes"``); ``--threads`` runs
them on worker threads. The API keeps its call counts in files in a temporary directory, so
every worker process sees the same counts. The engine logs each retry as a warning on
stderr. With ``--failures 4`` the API fails more often than the steps retry: the plan
pauses, and a person can fix the cause and ``world.resume(plan_id)`` it.

Run it: ``python examples/flaky_deploy.py [DB_URL] [--threads] [--failures N]``
(default database: ``pydynflow.db`` in the current directory).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from pydynflow import Action, ExecutionPlan, Phase, Retry, Skip, Step, World

HOSTS = ("web1", "web2")
RETRY = Retry(3, backoff=0.05)  # 3 restarts, after 0.05 s, 0.1 s and 0.2 s


class FlakyAPI:
    """A deployment API that answers 503 to the first ``failures`` calls of each operation.

    The calls are counted in one file per operation under ``state_dir``: the count is shared
    by every process (worker processes included) and survives a step's restart.
    """

    def __init__(self, state_dir: str, failures: int) -> None:
        self.state_dir = Path(state_dir)
        self.failures = failures

    def call(self, operation: str) -> int:
        """Call ``operation``; return how many calls it took, or raise `ConnectionError`."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        counter = self.state_dir / f"{operation}.calls"
        calls = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(calls))
        if calls <= self.failures:
            raise ConnectionError(f"{operation}: 503 Service Unavailable (call {calls})")
        return calls


class ApiStep(Action):
    """A step that calls the deployment API; the API's failures restart it (`Retry`)."""

    rescue = RETRY

    def call_api(self, operation: str) -> int:
        api = FlakyAPI(self.input["api"]["state_dir"], self.input["api"]["failures"])
        try:
            calls = api.call(operation)
        except ConnectionError as error:
            # The output is stored with the failure: the next attempt sees this list.
            self.output.setdefault("failed_calls", []).append(str(error))
            raise
        self.output["pid"] = os.getpid()  # a worker process's, with executor="processes"
        return calls


class UploadArtifact(ApiStep):
    """Upload the release's artifact."""

    def run(self) -> None:
        self.call_api(f"upload-{self.input['version']}")
        self.output["artifact"] = f"artifacts/app-{self.input['version']}.tar.gz"


class Rollout(ApiStep):
    """Install the artifact on one host."""

    def run(self) -> None:
        self.call_api(f"rollout-{self.input['host']}")
        self.output["host"] = self.input["host"]
        self.output["installed"] = self.input["artifact"]


class HealthCheck(ApiStep):
    """Check that every host answers with the new release."""

    def run(self) -> None:
        self.call_api("health-check")
        self.output["healthy"] = list(self.input["hosts"])


class WarmCache(Action):
    """Prefill the cache: nice to have, so a failure skips it instead of pausing the plan."""

    rescue = Skip

    def run(self) -> None:  # takes no event: when skipped it is not called again
        FlakyAPI(self.input["api"]["state_dir"], failures=1_000_000).call("warm-cache")


class Deploy(Action):
    """Upload, roll out to every host in concurrence, then health check and cache warm-up."""

    label = "deploy"

    def plan(self, version: str, api: dict[str, Any]) -> None:
        with self.sequence():
            upload = self.plan_action(UploadArtifact, {"version": version, "api": api})
            with self.concurrence():
                for host in HOSTS:
                    artifact = upload.output["artifact"]
                    self.plan_action(Rollout, {"host": host, "artifact": artifact, "api": api})
            with self.concurrence():
                self.plan_action(HealthCheck, {"hosts": list(HOSTS), "api": api})
                self.plan_action(WarmCache, {"api": api})


def step_name(step: Step) -> str:
    """Return the step's action class name, and its host if it has one."""
    host = step.input.get("host")
    return f"{step.action_class.__name__} {host}" if host else step.action_class.__name__


def report(plan: ExecutionPlan) -> None:
    """Print each run step's state, attempts and error, then the plan's result."""
    print(f"{'step':>4}  {'action':<16} {'state':<8} {'attempts':>8}  error")
    for step in plan.steps_of_phase(Phase.RUN):
        failed_calls = plan.actions[step.action_id].output.get("failed_calls", [])
        if step.error is not None:
            error = str(step.error)
        elif failed_calls:
            count, last = len(failed_calls), failed_calls[-1]
            error = f"- (recovered after {count} failed calls, last: {last})"
        else:
            error = "-"
        print(f"{step.id:>4}  {step_name(step):<16} {step.state:<8} {step.attempts:>8}  {error}")
    print(f"result: {plan.state} / {plan.result}")
    if plan.result == "warning":
        print("  (warning: an optional step was skipped, everything else succeeded)")
    elif plan.state == "paused":
        print("  (paused: fix the cause, then world.resume(plan_id), or world.skip a step)")


def main(argv: list[str] | None = None) -> ExecutionPlan:
    """Deploy a release through the flaky API and report how each step fared."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", default="sqlite:///pydynflow.db", help="database URL")
    parser.add_argument("--threads", action="store_true", help="run steps on worker threads")
    parser.add_argument(
        "--failures", type=int, default=2, help="503s the API answers per operation (2)"
    )
    args = parser.parse_args(argv)
    executor = "threads" if args.threads else "processes"
    with tempfile.TemporaryDirectory(prefix="flaky-api-") as state_dir:
        api = {"state_dir": state_dir, "failures": args.failures}
        with World(args.db, executor=executor, pool_size=len(HOSTS)) as world:
            triggered = world.trigger(Deploy, "2.0", api)
            print(f"triggered deploy of app 2.0 on {', '.join(HOSTS)}: plan {triggered.id}")
            print(f"steps run in worker {executor} (this process is {os.getpid()})")
            plan = triggered.wait(timeout=60)
            report(plan)
            pids = sorted({a.output["pid"] for a in plan.actions.values() if "pid" in a.output})
            if pids:
                print(f"the API was called from pids {', '.join(map(str, pids))}")
            print(f"the plan is stored in {world.db} (plan id {plan.id})")
            return plan


if __name__ == "__main__":
    main()
