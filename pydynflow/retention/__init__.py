"""Retention: deleting finished plans in short batches (`World.delete_plans`), the cleaner
that does it periodically (``World(keep_plans_for=...)``), and their JSON-lines backup."""

from pydynflow.retention.cleaner import CLEANER_INTERVAL, PlanCleaner
from pydynflow.retention.deletion import BACKUP_FORMAT, PlanBackup, plan_record
from pydynflow.retention.mixin import RetentionMixin, retention_settings
from pydynflow.storage.retention import BATCH_SIZE, NEVER_DELETED, DeletedBatch, PlanSelection

__all__ = [
    "BACKUP_FORMAT",
    "BATCH_SIZE",
    "CLEANER_INTERVAL",
    "NEVER_DELETED",
    "DeletedBatch",
    "PlanBackup",
    "PlanCleaner",
    "PlanSelection",
    "RetentionMixin",
    "plan_record",
    "retention_settings",
]
