"""Actions for the delayed and chained plan tests (FUT-*, CHAIN-*), in this process and in
executor processes of their own (`tests.support.delayed_service`).

`Recorded` appends a line to files named in its input when it is planned and when it runs,
with ``O_APPEND`` writes that several processes may share: a test counts the lines to see
that each plan was planned and run exactly once.
"""

from __future__ import annotations

import os
from typing import Any

from pydynflow import Action, ArgsSerializer, Fail


class Dummy(Action):
    """Dynflow's Dummy: one run step that copies its input's ``x`` to its output."""

    def run(self) -> None:
        self.output["x"] = self.input.get("x")


class FailingDummy(Action):
    """Dynflow's FailingDummy with the Fail strategy: its plan stops with result error."""

    rescue = Fail

    def run(self) -> None:
        raise RuntimeError("failing dummy")


def append_line(path: str, line: str) -> None:
    """Append ``line`` to ``path`` in one write (atomic for several processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


class Recorded(Action):
    """Notes each planning and each run (plan id, pid) in the files its arguments name."""

    def plan(self, planned: str, ran: str, n: int = 0) -> None:
        append_line(planned, self.execution_plan_id)
        self.plan_self({"ran": ran, "n": n})

    def run(self) -> None:
        append_line(self.input["ran"], self.execution_plan_id)
        self.output["pid"] = os.getpid()


class Box:
    """A value JSON cannot hold: stored by `BoxSerializer` as its content."""

    def __init__(self, content: Any) -> None:
        self.content = content


class BoxSerializer(ArgsSerializer):
    """Store `Box` arguments as ``{"box": content}`` and rebuild them."""

    def serialize(self, arg: Any) -> Any:
        return {"box": arg.content} if isinstance(arg, Box) else arg

    def deserialize(self, data: Any) -> Any:
        return Box(data["box"]) if isinstance(data, dict) and set(data) == {"box"} else data


class Unboxes(Action):
    """Planned with a `Box`: its delay stores it through `BoxSerializer`."""

    def delay(self, options: dict[str, Any], *args: Any, **kwargs: Any) -> ArgsSerializer:
        return BoxSerializer(args, kwargs)

    def plan(self, box: Box, *, label: str) -> None:
        assert isinstance(box, Box)
        self.plan_self({"content": box.content, "label": label})

    def run(self) -> None:
        self.output["content"] = self.input["content"]


class FailingSerializer(ArgsSerializer):
    """Dynflow's DummyCustomDelaySerializer: fails on the argument ``"fail"``."""

    def serialize(self, arg: Any) -> Any:
        if arg == "fail":
            raise RuntimeError("Enforced serializer failure")
        return arg


class DummyCustomDelaySerializer(Action):
    def delay(self, options: dict[str, Any], *args: Any, **kwargs: Any) -> ArgsSerializer:
        return FailingSerializer(args, kwargs)

    def plan(self, arg: Any) -> None:
        self.plan_self({"arg": arg})

    def run(self) -> None:
        pass
