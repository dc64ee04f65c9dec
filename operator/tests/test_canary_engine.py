"""The canary decision engine: one rule per test, in the words of issue 5."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from cricalgo_operator.canary import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Phase,
    Reading,
    Readings,
    TrackState,
    Verdict,
    decide,
)
from cricalgo_operator.canary.durations import format_duration, parse_duration
from cricalgo_operator.canary.engine import revised
from cricalgo_operator.canary.judge import judge

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
# The counted decision's rules; the sequential decision has test_canary_sequential.py.
SPEC = {
    "image": "cricalgo:v2",
    "canary": {"stepDuration": "10m", "analysisInterval": "1m", "decision": "count"},
}


def config(**canary: object) -> CanaryConfig:
    return CanaryConfig.from_spec({"image": "cricalgo:v2", "canary": {**SPEC["canary"], **canary}})


def good(cfg: CanaryConfig, **values: float | None) -> Readings:
    """Healthy readings for every check, with some values replaced (None = no data)."""
    base: dict[str, float | None] = {"requests": 500.0, "tasks": 200.0}
    base.update({c.name: 0.0 for c in cfg.checks})
    base.update(values)
    readings = [
        Reading(name, "canary", value, "" if value is not None else "empty")
        for name, value in base.items()
    ]
    readings += [Reading(name, "stable", 0.0) for name in base]
    return Readings(readings)


def running(step: int = 0, started: datetime = T0, **changes: object) -> CanaryStatus:
    steps = (10, 25, 50, 100)
    status = CanaryStatus(
        phase=Phase.PROGRESSING,
        stable_image="cricalgo:v1",
        canary_image="cricalgo:v2",
        canary_weight=steps[step],
        current_step=step,
        step_started_at=started,
    )
    return status.evolve(**changes)


READY = CanaryStatus(phase=Phase.READY, stable_image="cricalgo:v1")


def canary_created(cfg: CanaryConfig, status: CanaryStatus, now: datetime) -> CanaryStatus:
    """The status once the engine gave the spec's new revision a canary track."""
    decision = revised(cfg, status, now)
    assert decision is not None
    assert decision.action == Action.CREATE
    return decision.status


def test_durations_follow_go_syntax() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert format_duration(90) == "1m30s"
    for bad in ("", "10", "-1s", "0s", "1d"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_spec_defaults_and_custom_metric_overrides_builtin() -> None:
    cfg = CanaryConfig.from_spec(
        {
            "image": "x:1",
            "canary": {"metrics": [{"name": "latencyP95", "query": "q", "max": 1.0}]},
        }
    )
    assert cfg.steps == (10, 25, 50, 100)
    assert cfg.step_duration == 1800
    assert cfg.analysis_interval == 60
    assert cfg.max_failed_checks == 3
    assert cfg.fail_fast_factor == 5
    assert cfg.min_requests == 20
    names = [c.name for c in cfg.checks]
    assert names.count("latencyP95") == 1
    assert next(c for c in cfg.checks if c.name == "latencyP95").max == 1.0
    assert {"errorRate", "latencyP99", "queueDepth", "taskFailureRate"} <= set(names)


def test_new_revision_gets_a_canary_track_at_weight_zero_then_starts_at_first_step() -> None:
    created = decide(config(), READY, Readings(), T0 - timedelta(seconds=5))
    assert created.action == Action.CREATE
    assert created.reason == "CanaryStarted"
    assert (created.weight, created.status.current_step) == (0, -1)
    created = created.status
    d = decide(config(), created, Readings(), T0)
    assert d.action == Action.START
    assert d.status.canary_weight == 10
    assert d.status.current_step == 0
    assert d.status.phase == Phase.PROGRESSING
    assert d.status.canary_image == "cricalgo:v2"
    assert d.status.step_started_at == T0


def test_same_image_is_idle_and_first_version_is_not_a_canary() -> None:
    assert (
        decide(config(), READY.evolve(stable_image="cricalgo:v2"), Readings(), T0).action
        == Action.IDLE
    )
    d = decide(config(), CanaryStatus(), Readings(), T0)
    assert d.action == Action.INITIALIZE
    assert (d.status.phase, d.status.stable_image) == (Phase.INITIALIZING, "cricalgo:v2")
    assert not d.status.canary_active


def test_failed_image_waits_for_retry() -> None:
    failed = running(phase=Phase.ROLLED_BACK, canary_weight=0, failed_image="cricalgo:v2")
    d = decide(config(), failed, Readings(), T0)
    assert d.action == Action.IDLE
    assert d.reason == "FailedImage"
    d = decide(config(), failed, Readings(), T0, Control(retry=True))
    assert d.action == Action.START
    assert d.consumed == {"retry"}
    assert d.status.failed_image is None
    assert d.status.phase == Phase.PROGRESSING
    assert d.weight == 10


def test_no_traffic_reaches_the_canary_before_its_pods_are_ready() -> None:
    created = canary_created(config(), READY, T0)
    d = decide(config(), created, Readings(), T0, canary_ready=False)
    assert d.action == Action.HOLD
    assert d.reason == "AwaitingCanaryPods"
    assert d.weight == 0
    # Nothing moves but the Progressing condition, which now says why the canary holds.
    assert d.status.evolve(conditions=()) == created.evolve(conditions=())
    d = decide(config(), created, Readings(), T0 + timedelta(seconds=5), canary_ready=True)
    assert d.action == Action.START
    assert d.weight == 10


def test_abort_and_full_promotion_need_no_ready_canary() -> None:
    created = canary_created(config(), READY, T0)
    d = decide(config(), created, Readings(), T0, Control(abort=True), canary_ready=False)
    assert d.action == Action.ROLLBACK
    assert d.weight == 0
    d = decide(config(), created, Readings(), T0, Control(promote="full"), canary_ready=False)
    assert d.action == Action.PROMOTE
    assert d.weight == 0  # stable takes the canary's version; the canary got no traffic


def test_retry_scales_the_canary_up_before_sending_it_traffic() -> None:
    failed = running(phase=Phase.ROLLED_BACK, canary_weight=0, failed_image="cricalgo:v2")
    d = decide(config(), failed, Readings(), T0, Control(retry=True), canary_ready=False)
    assert d.action == Action.START
    assert d.consumed == {"retry"}
    assert (d.status.phase, d.status.current_step, d.weight) == (Phase.PROGRESSING, -1, 0)
    assert d.status.failed_image is None
    d = decide(config(), d.status, Readings(), T0, canary_ready=False)
    assert (d.action, d.reason) == (Action.HOLD, "AwaitingCanaryPods")
    d = decide(config(), d.status, Readings(), T0, canary_ready=True)
    assert (d.action, d.weight) == (Action.START, 10)


def test_failed_image_reapplied_after_another_version_still_needs_retry() -> None:
    d = decide(config(), READY.evolve(failed_image="cricalgo:v2"), Readings(), T0)
    assert d.action == Action.CREATE
    assert d.reason == "FailedImage"
    assert (d.status.phase, d.weight) == (Phase.ROLLED_BACK, 0)
    status = d.status
    d = decide(config(), status, Readings(), T0)
    assert d.action == Action.IDLE
    assert d.reason == "FailedImage"
    d = decide(config(), status, Readings(), T0, Control(retry=True))
    assert d.action == Action.START
    assert d.status.failed_image is None


def test_holds_until_step_duration_then_advances_if_last_tick_passed() -> None:
    cfg = config()
    d = decide(cfg, running(), good(cfg), T0 + timedelta(minutes=9))
    assert d.action == Action.HOLD
    assert d.reason == "StepInProgress"
    assert d.tick == Verdict.PASS
    d = decide(cfg, running(), good(cfg), T0 + timedelta(minutes=10))
    assert d.action == Action.ADVANCE
    assert d.weight == 25
    assert d.status.current_step == 1
    assert d.status.step_started_at == T0 + timedelta(minutes=10)


def test_no_advance_when_last_tick_had_no_data() -> None:
    cfg = config()
    d = decide(cfg, running(), good(cfg, latencyP99=None), T0 + timedelta(minutes=30))
    assert d.action == Action.HOLD
    assert d.reason == "Inconclusive"
    assert d.weight == 10
    assert d.status.inconclusive_checks == 1


def test_hundred_percent_holds_one_step_then_promotes() -> None:
    cfg = config()
    d = decide(cfg, running(step=3), good(cfg), T0 + timedelta(minutes=5))
    assert d.action == Action.HOLD
    assert d.weight == 100
    d = decide(cfg, running(step=3), good(cfg), T0 + timedelta(minutes=10))
    assert d.action == Action.PROMOTE
    assert d.status.phase == Phase.PROMOTING
    assert d.ended is None  # the canary still serves
    assert d.status.canary_weight == 100
    d = decide(cfg, d.status, Readings(), T0 + timedelta(minutes=11))
    assert d.action == Action.PROMOTED
    assert d.ended is not None
    assert d.ended.outcome == "promoted"
    done = d.status
    assert done.phase == Phase.READY
    assert done.stable_image == "cricalgo:v2"
    assert done.canary_image is None
    assert done.canary_weight == 0
    assert done.current_step == -1


def test_failed_checks_roll_back_at_max() -> None:
    cfg = config()
    status = running()
    bad = good(cfg, errorRate=0.01)  # 2x the 0.5 % SLO: failing, not severe
    for n in (1, 2):
        d = decide(cfg, status, bad, T0 + timedelta(minutes=n))
        assert d.action == Action.HOLD
        assert d.reason == "CheckFailed"
        assert d.status.failed_checks == n
        status = d.status
    d = decide(cfg, status, bad, T0 + timedelta(minutes=3))
    assert d.action == Action.ROLLBACK
    assert d.reason == "FailedChecks"
    assert d.weight == 0
    assert d.status.phase == Phase.ROLLING_BACK
    assert d.status.failed_image == "cricalgo:v2"
    assert d.ended is not None
    assert d.ended.outcome == "rolledBack"


def test_fail_fast_rolls_back_on_first_tick() -> None:
    cfg = config()
    d = decide(cfg, running(), good(cfg, errorRate=0.5), T0 + timedelta(minutes=1))
    assert d.action == Action.ROLLBACK
    assert d.reason == "FailFast"
    assert d.weight == 0
    d = decide(cfg, running(), good(cfg, latencyP95=math.inf), T0 + timedelta(minutes=1))
    assert d.action == Action.ROLLBACK
    assert d.reason == "FailFast"


def test_low_traffic_is_no_data_never_a_pass() -> None:
    cfg = config()
    verdicts = {v.name: v for v in judge(cfg, good(cfg, requests=5))}
    assert verdicts["errorRate"].verdict == Verdict.NODATA
    assert "minRequests" in verdicts["errorRate"].reason
    assert verdicts["queueDepth"].verdict == Verdict.PASS


def test_nan_reading_is_no_data() -> None:
    cfg = config()
    verdicts = {v.name: v for v in judge(cfg, good(cfg, latencyP95=math.nan))}
    assert verdicts["latencyP95"].verdict == Verdict.NODATA
    assert verdicts["latencyP95"].value is None


def test_on_no_data_fail_counts_as_failed_check() -> None:
    cfg = config(onNoData="fail")
    d = decide(cfg, running(), good(cfg, errorRate=None), T0 + timedelta(minutes=1))
    assert d.action == Action.HOLD
    assert d.reason == "CheckFailed"
    assert d.status.failed_checks == 1


def test_inconclusive_ticks_pause_and_stay_paused_until_resumed() -> None:
    cfg = config(maxInconclusive=2)
    status = running()
    nodata = good(cfg, errorRate=None)
    d = decide(cfg, status, nodata, T0 + timedelta(minutes=1))
    assert d.action == Action.HOLD
    d = decide(cfg, d.status, nodata, T0 + timedelta(minutes=2))
    assert d.action == Action.PAUSE
    assert d.reason == "NoData"
    assert d.status.phase == Phase.PAUSED
    # Data coming back does not resume by itself: someone must look at what happened.
    later = decide(cfg, d.status, good(cfg), T0 + timedelta(minutes=30))
    assert later.action == Action.HOLD
    assert later.reason == "PausedNoData"
    assert later.weight == 10
    resumed = decide(cfg, d.status, good(cfg), T0 + timedelta(minutes=31), Control(resume=True))
    assert resumed.action == Action.RESUME
    assert resumed.status.phase == Phase.PROGRESSING
    assert resumed.status.inconclusive_checks == 0
    assert resumed.consumed == {"resume"}


def test_user_pause_and_resume_restart_the_step_clock() -> None:
    d = decide(config(paused=True), running(), good(config()), T0 + timedelta(minutes=20))
    assert d.action == Action.PAUSE
    assert d.status.phase == Phase.PAUSED
    assert d.weight == 10
    d2 = decide(config(paused=True), d.status, good(config()), T0 + timedelta(minutes=21))
    assert d2.action == Action.HOLD
    d3 = decide(config(), d2.status, good(config()), T0 + timedelta(minutes=22))
    assert d3.action == Action.RESUME
    assert d3.status.step_started_at == T0 + timedelta(minutes=22)


def test_new_image_during_canary_restarts_at_first_step() -> None:
    cfg = CanaryConfig.from_spec({"image": "cricalgo:v3", "canary": SPEC["canary"]})
    old = running(step=2, failed_checks=2)
    d = decide(cfg, old, good(cfg), T0 + timedelta(minutes=5))
    # A new canary track at weight 0; the old canary is superseded in the history.
    assert d.action == Action.CREATE
    assert (d.weight, d.status.failed_checks) == (0, 0)
    assert d.ended is not None
    assert (d.ended.image, d.ended.outcome) == ("cricalgo:v2", "superseded")
    assert [h["outcome"] for h in d.status.history] == ["superseded"]
    swapped = d.status
    d = decide(cfg, swapped, good(cfg), T0 + timedelta(minutes=6))
    assert d.action == Action.START
    assert d.weight == 10
    assert d.status.current_step == 0
    assert d.status.canary_image == "cricalgo:v3"
    assert d.status.failed_checks == 0


def test_manual_controls() -> None:
    cfg = config()
    d = decide(cfg, running(), good(cfg), T0, Control(abort=True))
    assert d.action == Action.ROLLBACK
    assert d.reason == "Aborted"
    assert d.weight == 0
    assert d.ended is not None
    assert d.ended.outcome == "aborted"
    d = decide(cfg, running(), good(cfg), T0, Control(promote="full"))
    assert d.action == Action.PROMOTE
    assert d.consumed == {"promote"}
    d = decide(cfg, running(), good(cfg), T0, Control(promote="step"))
    assert d.action == Action.ADVANCE
    assert d.weight == 25
    d = decide(cfg, running(step=3), good(cfg), T0, Control(promote="step"))
    assert d.action == Action.PROMOTE


def test_promotion_and_rollback_in_progress_wait_for_the_deployments() -> None:
    cfg = config()
    promoting = running(step=3, phase=Phase.PROMOTING, stable_image="cricalgo:v2")
    d = decide(cfg, promoting, Readings(), T0, tracks=TrackState(stable_promoted=False))
    assert (d.action, d.reason, d.weight) == (Action.HOLD, "AwaitingStable", 100)
    d = decide(cfg, promoting, Readings(), T0, tracks=TrackState(stable_promoted=True))
    assert (d.action, d.status.phase, d.weight) == (Action.PROMOTED, Phase.READY, 0)
    rolling = running(phase=Phase.ROLLING_BACK, canary_weight=0)
    d = decide(cfg, rolling, Readings(), T0, tracks=TrackState(canary_drained=False))
    assert (d.action, d.reason, d.weight) == (Action.HOLD, "AwaitingCanaryDrain", 0)
    d = decide(cfg, rolling, Readings(), T0, tracks=TrackState(canary_drained=True))
    assert (d.action, d.status.phase, d.weight) == (Action.ROLLED_BACK, Phase.ROLLED_BACK, 0)
    assert d.ended is None  # the rollback itself was the end of this canary


def test_compare_to_stable() -> None:
    cfg = CanaryConfig.from_spec(
        {
            "image": "x:2",
            "canary": {
                "metrics": [
                    {
                        "name": "p50",
                        "query": "q",
                        "compareTo": "stable",
                        "maxRelativeIncrease": 0.2,
                    },
                    {"name": "errs", "query": "q", "compareTo": "stable", "maxIncrease": 0.01},
                ]
            },
        }
    )

    def readings(p50: float, p50_stable: float | None, errs: float) -> Readings:
        return Readings(
            [
                Reading("p50", "canary", p50),
                Reading("p50", "stable", p50_stable, "" if p50_stable is not None else "empty"),
                Reading("errs", "canary", errs),
                Reading("errs", "stable", 0.02),
            ]
        )

    v = {x.name: x for x in judge(cfg, readings(1.1, 1.0, 0.025))}
    assert v["p50"].verdict == Verdict.PASS
    assert v["p50"].threshold == pytest.approx(1.2)
    assert v["errs"].verdict == Verdict.PASS
    v = {x.name: x for x in judge(cfg, readings(1.3, 1.0, 0.035))}
    assert v["p50"].verdict == Verdict.FAIL
    assert not v["p50"].severe
    assert v["errs"].verdict == Verdict.FAIL
    v = {x.name: x for x in judge(cfg, readings(3.0, 1.0, 0.0))}
    assert v["p50"].severe  # +200 % against an allowed +20 %: beyond 5x
    v = {x.name: x for x in judge(cfg, readings(1.0, None, 0.0))}
    assert v["p50"].verdict == Verdict.NODATA
    assert "stable" in v["p50"].reason


def test_status_round_trip() -> None:
    status = running(step=2, failed_checks=1, inconclusive_checks=2, failed_image="old")
    patch = status.to_dict()
    assert patch["stepStartedAt"] == "2026-11-26T12:00:00Z"
    assert CanaryStatus.from_dict(patch) == status
    assert status.patch_from(patch) == {}
    stable_spec = {"image": "a", "env": [{"name": "X", "value": "1"}], "app": {"port": 1}}
    before = {**patch, "stableSpec": stable_spec, "children": ["Service/pay"]}
    after = status.evolve(stable_spec={"image": "b", "app": {"port": 1}}, current_step=3)
    # A merge patch: changed fields only, removed keys set to null, other owners' untouched.
    assert after.patch_from(before) == {"stableSpec": {"image": "b", "env": None}, "currentStep": 3}
