"""The migration gate of a canary (pure; part of the engine, `decide` consults it).

Before its first step a canary whose revision needs a schema migration (migrations.py)
waits at weight 0, its pods held at zero, while the migration Job runs; a failed Job
rolls it back (reason MigrationFailed) and a succeeded one is recorded in the status,
which lets the canary's pods start and the canary go on.
"""

from __future__ import annotations

from cricalgo_operator.canary.model import Action, CanaryStatus, Decision
from cricalgo_operator.migrations import FAILED, SUCCEEDED, Migration

AWAITING_MIGRATION = "AwaitingMigration"
MIGRATION_FAILED = "MigrationFailed"


def migration_gate(
    status: CanaryStatus, migration: Migration | None
) -> tuple[CanaryStatus, Decision | None]:
    """(The status with `migration` recorded, the hold while it runs or None).

    A failed migration's status is returned with a None decision: the caller rolls back
    (`rollback_reason` says why), as it does for every other rollback."""
    if migration is None:
        return status, None
    # With the image it migrated for: a later rollback of another image is not this one's.
    recorded = status.evolve(migration={**migration.to_dict(), "image": status.canary_image})
    if migration.state in (SUCCEEDED, FAILED):
        return recorded, None
    message = f"canary {status.canary_image} waits for its migration: {migration.message}"
    return recorded, Decision(Action.HOLD, AWAITING_MIGRATION, message, recorded)


def rollback_reason(migration: Migration | None) -> str | None:
    """The rollback message when the canary's migration failed, else None."""
    if migration is None or migration.state != FAILED:
        return None
    return f"migration failed: {migration.message}"
