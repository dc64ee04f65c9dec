"""`canary.progressDeadline` (canary/deadlines.py) through the engine's decisions, and the
hold reasons the Progressing condition carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cricalgo_operator.canary import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Phase,
    Reading,
    Readings,
    TrackState,
    decide,
)
from cricalgo_operator.canary.deadlines import PROGRESS_DEADLINE_EXCEEDED
from cricalgo_operator.canary.engine import revised
from cricalgo_operator.canary.runner import transition_of
from cricalgo_operator.conditions import conditions_for

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NOT_READY = TrackState(canary_ready=False)


def config(**canary: object) -> CanaryConfig:
    spec = {"stepDuration": "10m", "analysisInterval": "1m", "decision": "count", **canary}
    return CanaryConfig.from_spec({"image": "cricalgo:v2", "canary": spec})


def created(cfg: CanaryConfig) -> CanaryStatus:
    """A canary track just created for cricalgo:v2 at T0 (weight 0, waiting for its pods)."""
    stable = CanaryStatus(phase=Phase.READY, stable_image="cricalgo:v1", stable_revision="v1")
    decision = revised(cfg, stable, T0)
    assert decision is not None
    assert decision.action == Action.CREATE
    return decision.status


def progressing(status: CanaryStatus) -> dict[str, Any]:
    return dict(next(c for c in status.conditions if c["type"] == "Progressing"))


def test_pods_not_ready_within_the_deadline_roll_the_canary_back() -> None:
    cfg = config(progressDeadline="5m")
    status = created(cfg)
    held = decide(cfg, status, Readings(), T0 + timedelta(minutes=4), tracks=NOT_READY)
    assert (held.action, held.reason) == (Action.HOLD, "AwaitingCanaryPods")
    # The hold shows in the conditions, not only in an Event.
    assert progressing(held.status)["reason"] == "AwaitingCanaryPods"
    assert "gets traffic once its pods are ready" in progressing(held.status)["message"]
    late = T0 + timedelta(minutes=5)
    rolled = decide(cfg, held.status, Readings(), late, tracks=NOT_READY)
    assert (rolled.action, rolled.reason) == (Action.ROLLBACK, PROGRESS_DEADLINE_EXCEEDED)
    assert (rolled.status.phase, rolled.weight) == (Phase.ROLLING_BACK, 0)
    assert rolled.status.failed_image == "cricalgo:v2"
    entry = rolled.status.history[-1]
    assert entry["outcome"] == "rolledBack"
    assert entry["reason"].startswith(f"{PROGRESS_DEADLINE_EXCEEDED}: canary cricalgo:v2 pods")
    assert progressing(rolled.status)["reason"] == PROGRESS_DEADLINE_EXCEEDED
    transition = transition_of(held.status, rolled)
    assert transition is not None
    assert (transition.reason, transition.type) == ("RolledBack", "Warning")
    assert PROGRESS_DEADLINE_EXCEEDED in transition.message


def test_without_a_deadline_a_canary_waits_for_its_pods_for_ever() -> None:
    cfg = config()
    d = decide(cfg, created(cfg), Readings(), T0 + timedelta(days=30), tracks=NOT_READY)
    assert (d.action, d.reason) == (Action.HOLD, "AwaitingCanaryPods")


def test_ready_pods_start_the_canary_before_the_deadline_and_clear_the_hold() -> None:
    cfg = config(progressDeadline="5m")
    status = decide(cfg, created(cfg), Readings(), T0, tracks=NOT_READY).status
    started = decide(cfg, status, Readings(), T0 + timedelta(minutes=1))
    assert (started.action, started.weight) == (Action.START, 10)
    assert progressing(started.status)["reason"] == "Progressing"


def failing(cfg: CanaryConfig) -> Readings:
    """The canary's error rate above its SLO (not beyond fail-fast): a failed check."""
    values = {"requests": 500.0, "tasks": 200.0, **{c.name: 0.0 for c in cfg.checks}}
    values["errorRate"] = 0.01
    return Readings(Reading(name, "canary", value) for name, value in values.items())


def at_step(cfg: CanaryConfig, started: datetime) -> CanaryStatus:
    status = decide(cfg, created(cfg), Readings(), started).status
    assert (status.current_step, status.step_started_at) == (0, started)
    return status


def test_a_step_that_does_not_advance_within_its_duration_and_the_deadline_rolls_back() -> None:
    # Failed checks hold the step (maxFailedChecks is far away); the deadline ends it.
    cfg = config(progressDeadline="5m", maxFailedChecks=1000)
    status = at_step(cfg, T0)
    d = decide(cfg, status, failing(cfg), T0 + timedelta(minutes=14))
    assert (d.action, d.reason) == (Action.HOLD, "CheckFailed")
    assert progressing(d.status)["reason"] == "CheckFailed"
    d = decide(cfg, d.status, failing(cfg), T0 + timedelta(minutes=15))
    assert (d.action, d.reason) == (Action.ROLLBACK, PROGRESS_DEADLINE_EXCEEDED)
    assert "step 0 at 10% did not advance within 10m + 5m" in d.message
    assert d.status.failed_checks == 2  # the last check is counted too
    assert d.status.last_analysis is not None  # and its verdicts recorded
    assert d.status.history[-1]["outcome"] == "rolledBack"


def test_time_spent_paused_does_not_count_towards_the_deadline() -> None:
    cfg = config(progressDeadline="5m", maxFailedChecks=1000)
    paused_cfg = config(progressDeadline="5m", maxFailedChecks=1000, paused=True)
    status = at_step(cfg, T0)
    later = T0 + timedelta(hours=2)
    d = decide(paused_cfg, status, failing(cfg), later)
    assert d.status.phase == Phase.PAUSED
    d = decide(paused_cfg, d.status, failing(cfg), later + timedelta(hours=1))
    assert (d.action, d.reason) == (Action.HOLD, "Paused")
    resumed = decide(cfg, d.status, failing(cfg), later + timedelta(hours=1))
    assert resumed.action == Action.RESUME  # the step's clock restarts here
    d = decide(cfg, resumed.status, failing(cfg), later + timedelta(hours=1, minutes=14))
    assert (d.action, d.reason) == (Action.HOLD, "CheckFailed")


def test_a_user_request_still_wins_over_a_hold() -> None:
    cfg = config(progressDeadline="5m")
    late = T0 + timedelta(hours=1)
    d = decide(cfg, created(cfg), Readings(), late, Control(abort=True), tracks=NOT_READY)
    assert (d.action, d.reason) == (Action.ROLLBACK, "Aborted")


def test_the_reconciler_keeps_the_hold_reason_the_engine_wrote() -> None:
    cfg = config(progressDeadline="5m")
    held = decide(cfg, created(cfg), Readings(), T0, tracks=NOT_READY).status
    status = {**held.to_dict(), "canaryRevision": held.canary_revision}
    again = conditions_for(status, [], T0 + timedelta(seconds=5), 0, "cricalgo:v2")
    kept = next(c for c in again if c["type"] == "Progressing")
    assert (kept["reason"], kept["message"]) == (
        progressing(held)["reason"],
        progressing(held)["message"],
    )


def test_the_pods_hold_is_announced_with_the_write_that_records_it() -> None:
    cfg = config()
    status = created(cfg)
    first = decide(cfg, status, Readings(), T0, tracks=NOT_READY)
    transition = transition_of(status, first)
    assert transition is not None
    assert transition.reason == "AwaitingCanaryPods"
    # Once the conditions say so, the hold repeated every second writes and posts nothing.
    again = decide(cfg, first.status, Readings(), T0 + timedelta(seconds=1), tracks=NOT_READY)
    assert again.status == first.status
    assert transition_of(first.status, again) is None
