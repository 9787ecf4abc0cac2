"""The plugin's attribute entry point (``module:AuditProvisioning``)."""

from __future__ import annotations

from pydynflow import Action
from tests.support.plugin_core import ProvisionHost


class AuditProvisioning(Action):
    subscribe = ProvisionHost

    def run(self) -> None:
        self.output["audited"] = self.input["host"]
