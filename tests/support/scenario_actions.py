"""Actions of the Dynflow scenario tests (`tests.integration.test_dynflow_scenarios`), in this
process and in executor processes (`tests.support.executor_service` imports them)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pydynflow import Action


class DiesWhilePlanning(Action):
    """Kills its process the first time it is planned (``marker`` does not exist yet, and is
    written then); planned again, in a process that lives, it plans its run step."""

    def plan(self, marker: str) -> None:
        if not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        self.plan_self({"planned_in": os.getpid()})

    def run(self) -> None:
        self.output["ran_in"] = os.getpid()
