"""The plugin's module entry point: importing it registers `RecordInventory`."""

from __future__ import annotations

from pydynflow import Action
from tests.support.plugin_core import ProvisionHost


class RecordInventory(Action):
    """Planned whenever the core plans `ProvisionHost`, with the same input."""

    subscribe = ProvisionHost

    def run(self) -> None:
        self.output["recorded"] = self.input["host"]
