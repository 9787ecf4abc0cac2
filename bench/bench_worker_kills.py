"""1,000 plans x 5 steps across ``pydynflow worker --processes 3`` on PostgreSQL, with kills.

The acceptance run of the many-processes work. On a fresh PostgreSQL schema it starts the
daemon (``--app kill_app``, three executor processes), triggers ``--plans`` `FiveSteps`
plans from a client world in this process (16 threads), and SIGKILLs one executor child
every ``--kill-every`` seconds (``--kills`` times) while they run; the daemon restarts each.
Then it checks:

- every plan ended ``stopped``/``success``; none lost;
- no step ran in two processes at the same time: the attempts each step recorded in
  ``effects`` (start, and end unless killed; a killed attempt ends when its process was
  killed) do not overlap;
- every killed world was invalidated, and how long after its kill (the daemon invalidates
  a dead child's world at once; the bound is ``validity_timeout`` + one heartbeat).

    PYDYNFLOW_TEST_POSTGRES=postgresql://... .venv/bin/python bench/bench_worker_kills.py
        [--plans 1000] [--kills 10] [--kill-every 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import psycopg2  # noqa: E402
from kill_app import FiveSteps  # noqa: E402

from pydynflow import World  # noqa: E402

POSTGRES = os.environ.get("PYDYNFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
VALIDITY, HEARTBEAT = 30.0, 5.0  # the defaults every world runs with


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--kill-every", type=float, default=2.0)
    args = parser.parse_args()
    admin = psycopg2.connect(POSTGRES)
    admin.autocommit = True
    schema = f"kills_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
        cursor.execute(
            f'CREATE TABLE "{schema}".effects (id serial primary key, plan_id text, '
            "step_id int, pid int, started timestamptz, ended timestamptz)"
        )
    separator = "&" if "?" in POSTGRES else "?"
    url = f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
    World(url).stop()  # create the schema's tables
    env = {**os.environ, "KILL_APP_DB": url, "PYTHONPATH": f"{BENCH}:{BENCH.parent}"}
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pydynflow.cli",
            "worker",
            "--db",
            url,
            "--app",
            "kill_app",
            "--processes",
            "3",
        ],
        env=env,
        stdout=open(os.environ.get("KILL_LOG", os.devnull), "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    kills: list[dict[str, Any]] = []
    try:
        with World(url, executor=False) as client:
            deadline = time.monotonic() + 60
            while len([w for w in client.worlds() if w.executor and w.alive]) < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not start 3 executor worlds")
                time.sleep(0.1)  # the daemon starts (noqa: sleep-ok)
            start = time.monotonic()
            with ThreadPoolExecutor(16) as callers:
                future = callers.map(lambda _: client.trigger(FiveSteps), range(args.plans))
                killer = threading.Thread(target=_kill, args=(client, args, kills))
                killer.start()
                triggered = list(future)
                killer.join()
            ended = [t.wait(600) for t in triggered]
            elapsed = time.monotonic() - start
        report = _check(admin, schema, ended, kills, elapsed)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(120)
        if os.environ.get("KILL_KEEP"):
            print(f"kept {url}", file=sys.stderr)
        else:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
    print(json.dumps(report, indent=2))
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    (BENCH / "results" / f"worker-kills-{stamp}.json").write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def _kill(client: World, args: argparse.Namespace, kills: list[dict[str, Any]]) -> None:
    """SIGKILL a random live executor child every ``kill_every`` seconds; time invalidation."""
    rng = random.Random(7)
    for _ in range(args.kills):
        time.sleep(args.kill_every)  # the pace of the kills (noqa: sleep-ok)
        alive = [w for w in client.worlds() if w.executor and w.alive]
        if not alive:
            continue
        victim = rng.choice(alive)
        killed_at = datetime.now(UTC)
        os.kill(victim.pid, signal.SIGKILL)
        gone = None
        deadline = time.monotonic() + VALIDITY + 2 * HEARTBEAT
        while time.monotonic() < deadline:
            if victim.id not in {w.id for w in client.worlds()}:
                gone = (datetime.now(UTC) - killed_at).total_seconds()
                break
            time.sleep(0.05)  # watching the registry (noqa: sleep-ok)
        kills.append({"pid": victim.pid, "world": victim.id[:8], "at": killed_at, "gone_s": gone})


def _check(
    admin: Any, schema: str, ended: list[Any], kills: list[dict[str, Any]], elapsed: float
) -> dict[str, Any]:
    results: dict[str, int] = {}
    for plan in ended:
        key = f"{plan.state}/{plan.result}"
        results[key] = results.get(key, 0) + 1
    killed_at = {kill["pid"]: kill["at"] for kill in kills}
    with admin.cursor() as cursor:
        cursor.execute(
            f'SELECT plan_id, step_id, pid, started, ended FROM "{schema}".effects ORDER BY started'
        )
        attempts: dict[tuple[str, int], list[tuple[Any, Any]]] = {}
        for plan_id, step_id, pid, started, end in cursor.fetchall():
            end = end or killed_at.get(pid) or datetime.max.replace(tzinfo=UTC)
            attempts.setdefault((plan_id, step_id), []).append((started, end))
    overlaps = 0
    for spans in attempts.values():
        spans.sort()
        overlaps += sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
    bound = VALIDITY + HEARTBEAT
    invalidated = [kill["gone_s"] for kill in kills]
    failed = [plan for plan in ended if (plan.state, plan.result) != ("stopped", "success")]
    return {
        "plans": len(ended),
        "results": results,
        "failed_examples": [_story(plan) for plan in failed[:3]],
        "seconds": round(elapsed, 1),
        "kills": len(kills),
        "killed_worlds": [kill["world"] for kill in kills],
        "invalidated_after_s": [None if g is None else round(g, 2) for g in invalidated],
        "steps_retried": sum(1 for spans in attempts.values() if len(spans) > 1),
        "overlapping_attempts": overlaps,
        "ok": results == {"stopped/success": len(ended)}
        and overlaps == 0
        and len(kills) >= 10
        and all(g is not None and g <= bound for g in invalidated),
    }


def _story(plan: Any) -> dict[str, Any]:
    """Return what went wrong with a plan that did not succeed: its history and errors."""
    return {
        "id": plan.id,
        "history": [
            [entry.name, (entry.world_id or "")[:8], entry.details] for entry in plan.history
        ],
        "errors": {
            step.id: f"{step.state}: {step.error.message if step.error else ''}"
            for step in plan.steps.values()
            if step.state not in ("success", "pending")
        },
    }


if __name__ == "__main__":
    sys.exit(main())
