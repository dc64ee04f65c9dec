"""The engine's migration gate: a canary before its first step waits for its migration Job,
rolls back when the Job fails, and goes on once it succeeded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cricalgo_operator.canary import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Phase,
    Readings,
    TrackState,
    decide,
)
from cricalgo_operator.migrations import FAILED, RUNNING, SUCCEEDED, Migration

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CONFIG = CanaryConfig.from_spec({"image": "cricalgo:v2", "canary": {"decision": "count"}})
WAITING = CanaryStatus(
    phase=Phase.PROGRESSING,
    stable_image="cricalgo:v1",
    stable_revision="r1",
    canary_image="cricalgo:v2",
    canary_revision="cricalgo:v2",
    canary_weight=0,
    current_step=-1,
    step_started_at=T0,
)
JOB = "pay-migrate-0123456789"


def condition(status: CanaryStatus, type_: str) -> dict[str, Any]:
    return next(dict(c) for c in status.conditions if c["type"] == type_)


def test_a_running_migration_holds_the_canary_at_zero_and_says_so() -> None:
    running = Migration(JOB, RUNNING, f"Job {JOB}: 1 running, 0 failed")
    decision = decide(CONFIG, WAITING, Readings(), T0, migration=running)
    assert (decision.action, decision.reason) == (Action.HOLD, "AwaitingMigration")
    assert decision.status.canary_weight == 0
    assert decision.status.current_step == -1
    assert decision.status.migration == {**running.to_dict(), "image": "cricalgo:v2"}
    progressing = condition(decision.status, "Progressing")
    assert progressing["reason"] == "AwaitingMigration"
    assert JOB in progressing["message"]
    # Not even a full promotion skips it: the stable would run an unmigrated schema.
    promote = decide(CONFIG, WAITING, Readings(), T0, Control(promote="full"), migration=running)
    assert promote.reason == "AwaitingMigration"
    # An abort still acts.
    abort = decide(CONFIG, WAITING, Readings(), T0, Control(abort=True), migration=running)
    assert abort.action == Action.ROLLBACK


def test_a_succeeded_migration_is_recorded_and_the_canary_goes_on() -> None:
    done = Migration(JOB, SUCCEEDED, f"Job {JOB} completed")
    decision = decide(CONFIG, WAITING, Readings(), T0, migration=done)
    assert decision.action == Action.START
    assert decision.status.canary_weight == 10
    assert decision.status.migration == {**done.to_dict(), "image": "cricalgo:v2"}
    # While the pods start, the record stays (the render scales them up from it).
    not_ready = TrackState(canary_ready=False)
    held = decide(CONFIG, WAITING, Readings(), T0, tracks=not_ready, migration=done)
    assert held.reason == "AwaitingCanaryPods"
    assert held.status.migration == decision.status.migration


def test_a_failed_migration_rolls_back_and_the_cr_is_degraded_for_it() -> None:
    failed = Migration(JOB, FAILED, f"Job {JOB} failed (BackoffLimitExceeded)")
    decision = decide(CONFIG, WAITING, Readings(), T0, migration=failed)
    assert (decision.action, decision.reason) == (Action.ROLLBACK, "MigrationFailed")
    assert decision.warning
    assert decision.status.phase == Phase.ROLLING_BACK
    assert decision.status.failed_image == "cricalgo:v2"
    assert decision.status.history[-1]["outcome"] == "rolledBack"
    assert "BackoffLimitExceeded" in decision.status.history[-1]["reason"]
    # The canary has no pod: the rollback ends at once, Degraded says why.
    after = decide(CONFIG, decision.status, Readings(), T0 + timedelta(seconds=1))
    assert after.status.phase == Phase.ROLLED_BACK
    degraded = condition(after.status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "MigrationFailed")
    assert condition(after.status, "Promoted")["status"] == "False"


def test_without_a_migration_nothing_changes() -> None:
    decision = decide(CONFIG, WAITING, Readings(), T0)
    assert decision.action == Action.START
    assert decision.status.migration is None


def test_a_later_rollback_of_another_image_is_not_blamed_on_an_old_migration() -> None:
    old = {"job": JOB, "image": "cricalgo:v0", "state": FAILED, "message": "old failure"}
    rolling = WAITING.evolve(
        phase=Phase.ROLLING_BACK, failed_image="cricalgo:v2", current_step=1, migration=old
    )
    after = decide(CONFIG, rolling, Readings(), T0)
    assert after.status.phase == Phase.ROLLED_BACK
    assert condition(after.status, "Degraded")["reason"] == "RolledBack"
