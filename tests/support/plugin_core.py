"""A core action that the demo plugin (tests/plugins/pydynflow_demo_plugin) subscribes to.

The core never imports the plugin: a world finds the plugin through its entry points.
"""

from __future__ import annotations

from pydynflow import Action


class ProvisionHost(Action):
    def run(self) -> None:
        self.output["provisioned"] = self.input["host"]
