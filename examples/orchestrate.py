"""Orchestrate an infrastructure: Dynflow's CreateInfrastructure example made real.

Per host: prepare a disk, create a VM, add its IP to the hosts file, configure the machine.
The db and storage hosts are created in concurrence; the web server host is configured after
both of them, because its input references their outputs (the engine sequences it for us).

Run it with ``make demo``; it uses the embedded SQLite default (``pydynflow.db``).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from pydynflow import Action, Concurrence, ExecutionPlan, Flow, Phase, Sequence, World

WORK_SECONDS = 0.15  # how long each simulated step "works", so that progress is visible

WORKDIR = Path("demo-infrastructure")


def _fake_ip(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return f"10.0.{digest[0]}.{digest[1] % 250 + 2}"


class PrepareDisk(Action):
    """Create the disk image of a host."""

    def run(self) -> None:
        time.sleep(WORK_SECONDS)  # stands in for real work (an API call, a copy)
        disk = WORKDIR / f"{self.input['name']}.img"
        disk.parent.mkdir(parents=True, exist_ok=True)
        disk.write_bytes(b"\0" * 4096)
        self.output["path"] = str(disk)


class CreateVM(Action):
    """Create the VM from its disk and give it an address."""

    def run(self) -> None:
        time.sleep(WORK_SECONDS)
        self.output["ip"] = _fake_ip(self.input["name"])
        self.output["disk"] = self.input["disk"]


class AddIPtoHosts(Action):
    """Add the VM's address to the hosts file."""

    def run(self) -> None:
        time.sleep(WORK_SECONDS)
        hosts = WORKDIR / "hosts"
        line = f"{self.input['ip']} {self.input['name']}\n"
        existing = hosts.read_text() if hosts.exists() else ""
        if line not in existing:  # idempotent: safe to run again after a crash
            hosts.write_text(existing + line)
        self.output["hosts_file"] = str(hosts)


class ConfigureMachine(Action):
    """Write the machine's configuration for its role."""

    def run(self) -> None:
        time.sleep(WORK_SECONDS)
        config = {"role": self.input["role"], "ip": self.input["ip"], **self.input["peers"]}
        path = WORKDIR / f"{self.input['name']}.conf"
        path.write_text("".join(f"{key}={value}\n" for key, value in sorted(config.items())))
        self.output["config"] = str(path)


class CreateMachine(Action):
    """Create one host: disk, VM, hosts entry, configuration, in sequence."""

    def plan(self, name: str, role: str, **peers: Any) -> None:
        with self.sequence():
            disk = self.plan_action(PrepareDisk, {"name": name})
            vm = self.plan_action(CreateVM, {"name": name, "disk": disk.output["path"]})
            self.plan_action(AddIPtoHosts, {"name": name, "ip": vm.output["ip"]})
            self.plan_action(
                ConfigureMachine,
                {"name": name, "role": role, "ip": vm.output["ip"], "peers": peers},
            )
        self.plan_self({"name": name, "role": role, "ip": vm.output["ip"]})

    def run(self) -> None:
        self.output["ready"] = self.input["ip"]


class CreateInfrastructure(Action):
    """The db and storage hosts in concurrence, then the web server that uses both."""

    label = "create infrastructure"

    def plan(self) -> None:
        with self.sequence():
            with self.concurrence():
                db = self.plan_action(CreateMachine, "host1", "db")
                storage = self.plan_action(CreateMachine, "host2", "storage")
            self.plan_action(
                CreateMachine,
                "host3",
                "web_server",
                db_machine=db.output["ready"],
                storage_machine=storage.output["ready"],
            )


def flow_tree(plan: ExecutionPlan, flow: Flow, tree: Tree) -> None:
    """Add ``flow`` to a rich tree, one node per step with its state and timings."""
    if isinstance(flow, (Sequence, Concurrence)):
        branch = tree.add(f"[bold]{type(flow).__name__}[/bold]")
        for sub_flow in flow.flows:
            flow_tree(plan, sub_flow, branch)
        return
    step = plan.steps[flow.step_id]  # type: ignore[attr-defined]
    colour = STATE_COLOURS.get(step.state, "cyan")
    tree.add(
        f"{step.id}: {step.action_class.__name__} {step.input.get('name', '')} "
        f"[{colour}]{step.state}[/{colour}] "
        f"(real {step.real_time * 1000:.0f} ms, run {step.execution_time * 1000:.1f} ms)"
    )


STATE_COLOURS = {"success": "green", "error": "red", "pending": "yellow", "running": "cyan"}


def progress_table(plan: ExecutionPlan) -> Table:
    """Return a live view: the plan's progress and the state of each run step."""
    table = Table(title=f"{plan.label}: {plan.state} ({plan.progress() * 100:.0f} %)")
    table.add_column("step")
    table.add_column("action")
    table.add_column("host")
    table.add_column("state")
    for step in plan.steps_of_phase(Phase.RUN):
        colour = STATE_COLOURS.get(step.state, "white")
        table.add_row(
            str(step.id),
            step.action_class.__name__,
            str(step.input.get("name", "")),
            f"[{colour}]{step.state}[/{colour}]",
        )
    return table


def main(db: str = "sqlite:///pydynflow.db") -> ExecutionPlan:
    """Run the infrastructure workflow with live progress, then show how it ran."""
    console = Console()
    with World(db) as world:
        triggered = world.trigger(CreateInfrastructure)
        console.print(f"triggered [bold]create infrastructure[/bold]: plan {triggered.id}")
        with Live(progress_table(world.load(triggered.id)), console=console) as live:
            while not triggered.done():  # refresh the view a few times a second
                live.update(progress_table(world.load(triggered.id)))
                time.sleep(0.1)
            live.update(progress_table(world.load(triggered.id)))
        plan = triggered.wait()
        console.print()
        tree = Tree(
            f"run flow: {plan.state} / {plan.result} in {plan.real_time:.2f} s "
            f"({len(plan.steps)} steps, hosts created in {WORKDIR}/)"
        )
        flow_tree(plan, plan.run_flow, tree)
        console.print(tree)
        console.print(f"the plan is stored in [bold]{world.db}[/bold] (plan id {plan.id})")
        return plan


if __name__ == "__main__":
    main(*sys.argv[1:])
