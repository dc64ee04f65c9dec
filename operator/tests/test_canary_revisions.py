"""The engine's answer to a changed pod template (canary/revisions.py), on whole CRs."""

from __future__ import annotations

import datetime
from typing import Any

from cricalgo_operator.canary.engine import decide, first_ready, revised
from cricalgo_operator.canary.model import (
    CanaryStatus,
    Control,
    Decision,
    Readings,
    TrackState,
)
from cricalgo_operator.canary.runner import config_of, traffic_first, transition_of, with_owned
from cricalgo_operator.canary.state import HISTORY_LIMIT
from cricalgo_operator.model import Cad

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)


def cad(image: str = "reg/cricalgo:1.0", status: dict[str, Any] | None = None, **spec: Any) -> Cad:
    body = {
        "metadata": {"name": "pay", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": {
            "image": image,
            "database": {"secretRef": {"name": "db"}},
            "redis": {"secretRef": {"name": "r"}},
            **spec,
        },
        "status": status or {},
    }
    return Cad.from_body(body)


def revise(c: Cad, now: datetime.datetime = NOW) -> tuple[Cad, Decision | None]:
    """What the reconciler does with a CR: the engine's revision, merged into the status."""
    decision = revised(config_of(c), CanaryStatus.from_dict(c.status), now)
    if decision is None:
        return c, None
    return c.with_status(with_owned(c.status, decision.status)), decision


def tick(c: Cad, now: datetime.datetime, control: Control, tracks: TrackState) -> Cad:
    status = CanaryStatus.from_dict(c.status)
    decision = decide(config_of(c), status, Readings(), now, control, tracks=tracks)
    return c.with_status(with_owned(c.status, decision.status))


def stable() -> Cad:
    return revise(cad())[0]


def test_first_revision_becomes_stable_without_a_canary() -> None:
    first, decision = revise(cad())
    assert decision is not None
    assert first.status["phase"] == "Initializing"
    assert first.status["stableImage"] == "reg/cricalgo:1.0"
    assert first.status["stableSpec"]["image"] == "reg/cricalgo:1.0"
    assert not first.canary_active
    assert decision.reason == "Initializing"


def test_new_image_starts_a_canary_at_weight_zero_and_a_repeat_changes_nothing() -> None:
    moved, decision = revise(cad("reg/cricalgo:1.1", stable().status))
    assert decision is not None
    assert moved.status["phase"] == "Progressing"
    assert moved.status["canaryImage"] == "reg/cricalgo:1.1"
    assert moved.status["canaryWeight"] == 0
    assert moved.status["currentStep"] == -1
    assert decision.reason == "CanaryStarted"
    assert {c["type"]: c["status"] for c in moved.status["conditions"]}["Progressing"] == "True"
    assert revise(moved, LATER)[1] is None


def test_changing_env_is_a_new_revision_but_replicas_are_not() -> None:
    scaled = cad(status=stable().status, app={"replicas": {"min": 4, "max": 20}})
    assert revise(scaled)[1] is None
    env = revise(cad(status=stable().status, env=[{"name": "FEATURE", "value": "on"}]))[0]
    assert env.status["phase"] == "Progressing"


def test_a_newer_image_supersedes_the_canary_and_reverting_aborts_it() -> None:
    first = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    second, decision = revise(cad("reg/cricalgo:1.2", first.status), LATER)
    assert decision is not None
    assert decision.ended is not None
    assert second.status["canaryImage"] == "reg/cricalgo:1.2"
    assert second.status["history"][-1]["outcome"] == "superseded"
    assert second.status["history"][-1]["image"] == "reg/cricalgo:1.1"
    assert second.status["history"][-1]["startedAt"] == "2026-11-27T12:00:00Z"
    reverted, decision = revise(cad("reg/cricalgo:1.0", second.status), LATER)
    assert decision is not None
    assert reverted.status["phase"] == "Ready"
    assert not reverted.canary_active
    assert reverted.status["history"][-1]["outcome"] == "aborted"
    assert len(reverted.status["history"]) == 2
    transition = transition_of(CanaryStatus.from_dict(second.status), decision)
    assert transition is not None
    assert transition.type == "Warning"


def test_promotion_keeps_the_canary_until_the_stable_serves_then_one_history_entry() -> None:
    canary = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    serving = TrackState(stable_promoted=False, serving={"app": 9, "worker": 21})
    promoting = tick(canary, LATER, Control(promote="full"), serving)
    assert promoting.status["phase"] == "Promoting"
    assert promoting.status["stableImage"] == "reg/cricalgo:1.1"
    assert promoting.status["stableSpec"]["image"] == "reg/cricalgo:1.1"
    assert promoting.status["promotionReplicas"] == {"app": 9, "worker": 21}
    assert promoting.canary_active  # the canary keeps serving until stable is back
    assert "history" not in promoting.status
    assert revise(cad("reg/cricalgo:1.2", promoting.status), LATER)[1] is None
    waiting = tick(promoting, LATER, Control(), serving)
    assert waiting.status == promoting.status
    done = tick(promoting, LATER, Control(), TrackState(stable_promoted=True))
    assert not done.canary_active
    assert done.status["phase"] == "Ready"
    assert "promotionReplicas" not in done.status
    assert [h["outcome"] for h in done.status["history"]] == ["promoted"]
    assert done.status["history"][-1]["reason"] == "promoted by user: reg/cricalgo:1.1"


def test_rollback_scales_the_canary_down_then_is_rolled_back_once_it_drained() -> None:
    canary = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    draining = TrackState(canary_drained=False)
    rolling = tick(canary, LATER, Control(abort=True), draining)
    assert rolling.status["phase"] == "RollingBack"
    assert rolling.canary_weight == 0
    assert rolling.canary_scaled_down
    assert rolling.status["failedImage"] == "reg/cricalgo:1.1"
    assert [h["outcome"] for h in rolling.status["history"]] == ["aborted"]
    assert tick(rolling, LATER, Control(), draining).status == rolling.status
    rolled = tick(rolling, LATER, Control(), TrackState(canary_drained=True))
    assert rolled.status["phase"] == "RolledBack"
    assert {c["type"]: c["status"] for c in rolled.status["conditions"]}["Degraded"] == "True"
    assert len(rolled.status["history"]) == 1
    # The rolled-back image stays rolled back until something new is pushed.
    assert revise(rolled, LATER)[1] is None


def test_a_failed_image_applied_again_starts_no_canary_until_retry() -> None:
    canary = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    rolled = tick(canary, LATER, Control(abort=True), TrackState())
    rolled = tick(rolled, LATER, Control(), TrackState())
    # Back to the stable image (the idle canary goes), then the failed image once more.
    back, decision = revise(cad("reg/cricalgo:1.0", rolled.status), LATER)
    assert decision is not None
    assert decision.reason == "CanaryRemoved"
    assert not back.canary_active
    assert len(back.status["history"]) == 1  # the rollback is recorded once
    again, decision = revise(cad("reg/cricalgo:1.1", back.status), LATER)
    assert decision is not None
    assert again.status["phase"] == "RolledBack"
    assert again.canary_scaled_down  # rendered at zero replicas: no pod, no traffic
    assert again.canary_weight == 0
    assert again.status["failedImage"] == "reg/cricalgo:1.1"
    transition = transition_of(CanaryStatus.from_dict(back.status), decision)
    assert transition is not None
    assert (transition.reason, transition.type) == ("FailedImage", "Warning")
    # Another image is a canary as usual.
    assert revise(cad("reg/cricalgo:1.2", back.status), LATER)[0].status["phase"] == "Progressing"


def test_history_keeps_the_last_ten_canaries() -> None:
    c = stable()
    for i in range(1, HISTORY_LIMIT + 4):
        c = revise(cad(f"reg/cricalgo:1.{i}", c.status), LATER)[0]
    images = [h["image"] for h in c.status["history"]]
    assert images == [f"reg/cricalgo:1.{i}" for i in range(3, HISTORY_LIMIT + 3)]


def promoted(c: Cad) -> dict[str, Any]:
    return next(x for x in c.status["conditions"] if x["type"] == "Promoted")


def test_promoted_condition_follows_the_spec_image_through_a_canary() -> None:
    first = stable()
    assert promoted(first)["status"] == "Unknown"  # Initializing: no outcome yet
    ready = tick(first, NOW, Control(), TrackState())
    assert ready.status["phase"] == "Initializing"  # only the stable's availability does that
    # A new image: Unknown while its canary runs, whatever the stable's condition was.
    canary = revise(cad("reg/cricalgo:1.1", first.status))[0]
    assert promoted(canary)["status"] == "Unknown"
    waiting = TrackState(stable_promoted=False)
    promoting = tick(canary, LATER, Control(promote="full"), waiting)
    assert promoted(promoting)["status"] == "Unknown"  # stable not yet available at size
    done = tick(promoting, LATER, Control(), TrackState())
    assert (promoted(done)["status"], promoted(done)["reason"]) == ("True", "Promoted")
    assert promoted(done)["message"] == "reg/cricalgo:1.1 is stable"
    assert promoted(done)["observedGeneration"] == 3


def test_promoted_turns_false_in_the_rollback_write_itself() -> None:
    canary = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    rolling = tick(canary, LATER, Control(abort=True), TrackState(canary_drained=False))
    assert rolling.status["phase"] == "RollingBack"
    condition = promoted(rolling)
    assert (condition["status"], condition["reason"]) == ("False", "RolledBack")
    assert "reg/cricalgo:1.1 was rolled back" in condition["message"]
    rolled = tick(rolling, LATER, Control(), TrackState())
    assert promoted(rolled)["status"] == "False"
    # Re-applying the failed image keeps it False.
    back = revise(cad("reg/cricalgo:1.0", rolled.status), LATER)[0]
    again = revise(cad("reg/cricalgo:1.1", back.status), LATER)[0]
    assert promoted(again)["status"] == "False"


def test_aborting_back_to_the_stable_image_reports_it_promoted() -> None:
    canary = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    back = revise(cad("reg/cricalgo:1.0", canary.status))[0]
    assert promoted(back)["status"] == "True"


def test_initializing_becomes_ready_only_once_the_stable_is_available() -> None:
    first = stable()
    config, status = config_of(first), CanaryStatus.from_dict(first.status)
    assert first_ready(config, status, NOW, stable_available=False) is None
    decision = first_ready(config, status, NOW, stable_available=True)
    assert decision is not None
    assert decision.status.phase == "Ready"
    assert promoted(first.with_status(with_owned(first.status, decision.status)))["status"] == (
        "True"
    )
    ready = first.with_status(with_owned(first.status, decision.status))
    assert first_ready(config, CanaryStatus.from_dict(ready.status), LATER, True) is None


def test_a_canary_decision_keeps_a_reported_failure_on_the_cr() -> None:
    from cricalgo_operator.failures import OWNERSHIP_CONFLICT, failure_conditions

    canary = revise(cad("reg/cricalgo:1.1", stable().status))[0]
    failed = failure_conditions(
        list(canary.status["conditions"]), OWNERSHIP_CONFLICT, "Service/pay-canary exists", NOW, 3
    )
    broken = canary.with_status({**canary.status, "conditions": failed})
    started = tick(broken, LATER, Control(), TrackState())
    assert started.status["phase"] == "Progressing"
    degraded = next(c for c in started.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", OWNERSHIP_CONFLICT)


def test_traffic_leaves_the_canary_before_its_pods_do() -> None:
    vs = {"kind": "VirtualService", "metadata": {"name": "pay"}}
    ingress = {"kind": "Ingress", "metadata": {"name": "pay-canary"}}
    deployment = {"kind": "Deployment", "metadata": {"name": "pay-app-canary"}}
    # A rollback (25 -> 0) or the end of a promotion (100 -> 0): the routes go first.
    assert traffic_first(25, 0, [deployment, vs]) == ([vs], [deployment])
    assert traffic_first(100, 0, [ingress, deployment]) == ([ingress], [deployment])
    # Up a step, or nothing but routes or nothing but pods changing: one apply.
    assert traffic_first(10, 25, [vs, deployment]) == ([], [vs, deployment])
    assert traffic_first(25, 0, [vs]) == ([], [vs])
    assert traffic_first(25, 0, [deployment]) == ([], [deployment])
