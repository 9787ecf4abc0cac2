"""``pydynflow worlds list`` and ``worlds check [--invalidate]``, as real processes.

A live executor world runs in another process (`tests.support.executor_service`, which
registers with a 2 s validity timeout); a killed one leaves its record behind, dead once
that timeout has passed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from pydynflow import World
from tests.cli.conftest import ROOT, TIMEOUT, Cli


class Service:
    """`tests.support.executor_service` on ``url``: an executor world in a process."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.executor_service", url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # once its world is started
        assert line.startswith("ready "), line
        self.world_id = line.split()[1]


@pytest.fixture
def service(url: str) -> Iterator[Service]:
    """Return an executor world running in another process; killed after the test."""
    World(url).stop()  # create the database
    running = Service(url)
    yield running
    running.process.kill()
    running.process.wait(TIMEOUT)


def eventually(condition: Callable[[], object], what: str) -> None:
    """Wait until ``condition()`` holds (the database, as time and other processes go)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # the dead world's heartbeat ageing (noqa: sleep-ok)


def test_list_shows_every_world_with_its_kind_and_liveness(
    cli: Cli, url: str, service: Service
) -> None:
    with World(url, executor=False, name="the-client") as client:
        done = cli("worlds", "list", "--db", url)
        assert done.returncode == 0, done.stderr
        header, *rows = done.stdout.splitlines()
        assert header.split() == [
            "ID", "NAME", "KIND", "HOST", "PID", "QUEUES", "STARTED_AT", "LAST_SEEN", "ALIVE",
        ]  # fmt: skip
        by_id = {row.split()[0]: row.split() for row in rows}
        assert set(by_id) == {service.world_id, client.id}
        executor = by_id[service.world_id]
        assert executor[2:6] == ["executor", executor[3], str(service.process.pid), "default=5"]
        assert executor[-1] == "yes"
        assert by_id[client.id][1:3] == ["the-client", "client"]
        assert by_id[client.id][5] == "-"

        done = cli("worlds", "list", "--db", url, "--json")
        assert done.returncode == 0, done.stderr
        listed = {world["id"]: world for world in json.loads(done.stdout)}
    assert set(listed) == {service.world_id, client.id}
    record = listed[service.world_id]
    assert record["kind"] == "executor" and record["executor"] is True
    assert record["pid"] == service.process.pid and record["queues"] == {"default": 5}
    assert record["alive"] is True
    assert record["started_at"] <= record["last_seen"]
    assert listed[client.id]["kind"] == "client" and listed[client.id]["queues"] == {}


def test_list_on_a_database_without_worlds(cli: Cli, url: str) -> None:
    World(url).stop()
    done = cli("worlds", "list", "--db", url)
    assert (done.returncode, done.stdout) == (0, "no worlds registered\n")
    assert json.loads(cli("worlds", "list", "--db", url, "--json").stdout) == []


def test_check_finds_a_killed_world_and_invalidates_it(
    cli: Cli, url: str, service: Service
) -> None:
    done = cli("worlds", "check", "--db", url)
    assert (done.returncode, done.stdout) == (0, "no dead worlds\n"), done.stderr

    service.process.kill()
    service.process.wait(TIMEOUT)
    with World(url, executor=False) as client:
        eventually(
            lambda: not {i.id: i.alive for i in client.worlds()}[service.world_id],
            "the killed world's heartbeat to age past its validity timeout",
        )
    done = cli("worlds", "check", "--db", url)
    assert done.returncode == 1
    assert service.world_id in done.stdout
    assert "1 dead world(s): `pydynflow worlds check --invalidate` invalidates them" in done.stderr
    checked = cli("worlds", "check", "--db", url, "--json")
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert [world["id"] for world in report["dead"]] == [service.world_id]
    assert report["invalidated"] == [] and report["dead"][0]["alive"] is False

    done = cli("worlds", "check", "--db", url, "--invalidate", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["invalidated"] == [service.world_id]
    listed = json.loads(cli("worlds", "list", "--db", url, "--json").stdout)
    assert service.world_id not in {world["id"] for world in listed}
    done = cli("worlds", "check", "--db", url)
    assert (done.returncode, done.stdout) == (0, "no dead worlds\n")
