"""The actions a release service runs: the ``--app`` module of ``pydynflow worker``.

`Release` builds, waits for a person's sign-off (an event from another process: the web
hook of `examples/release_webhook.py`), then publishes. The build and the publication are
retried if the process running them dies (`Retry`); the sign-off step waits without a
thread.

Run the service (the daemon: two executor processes, JSON logs on stdout) from this
directory, so that ``--app`` finds the module::

    cd examples && pydynflow worker --db sqlite:///releases.db --app release_actions --processes 2

and, from another terminal (or host, on PostgreSQL), the integration:
``cd examples && python release_webhook.py``.
"""

from __future__ import annotations

import os
from typing import Any

from pydynflow import Action, Retry


class Build(Action):
    """Build the version (here: say which process did)."""

    rescue = Retry(3, backoff=0.5)

    def run(self) -> None:
        self.output["artifact"] = f"app-{self.input['version']}.tar.gz"
        self.output["built_by"] = os.getpid()


class SignOff(Action):
    """Wait for the sign-off event: ``{"by": name}``."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend()  # no thread is held while it waits
        self.output["signed_off_by"] = event["by"]


class Publish(Action):
    """Publish the artifact once it is signed off."""

    rescue = Retry(3, backoff=0.5)

    def run(self) -> None:
        self.output["published"] = self.input["artifact"]


class Release(Action):
    """Build, sign off, publish: in sequence."""

    label = "release"

    def plan(self, version: str) -> None:
        with self.sequence():
            build = self.plan_action(Build, {"version": version})
            self.plan_action(SignOff, {"version": version})
            self.plan_action(Publish, {"artifact": build.output["artifact"]})
