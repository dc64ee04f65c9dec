"""Invariants of the canary engine, checked with hypothesis: single decisions, and whole
paths through the state machine (new revisions, reverts, controls, Deployments that
follow or lag, any readings)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

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
    revised,
)
from cricalgo_operator.canary.model import RATIO_COUNTS, REQUESTS, TASKS, step_reading
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=60, deadline=None)

steps_st = st.lists(st.integers(1, 99), min_size=0, max_size=5, unique=True).map(
    lambda xs: (*sorted(xs), 100)
)


@st.composite
def configs(draw: st.DrawFn) -> CanaryConfig:
    interval = draw(st.integers(1, 120))
    return CanaryConfig.from_spec(
        {
            "image": "app:v2",
            "canary": {
                "steps": list(draw(steps_st)),
                "analysisInterval": f"{interval}s",
                "stepDuration": f"{interval * draw(st.integers(1, 10))}s",
                "maxFailedChecks": draw(st.integers(1, 5)),
                "maxInconclusive": draw(st.integers(1, 5)),
                "failFastFactor": draw(st.sampled_from([1, 2, 5, 10])),
                "onNoData": draw(st.sampled_from(["hold", "fail"])),
                "minRequests": draw(st.sampled_from([0, 20])),
                "decision": draw(st.sampled_from(["count", "sequential"])),
            },
        }
    )


# The step's counts the sequential decision reads, per ratio check: (failures, total).
STEP_COUNTS = [step_reading(name) for pair in RATIO_COUNTS.values() for name in pair]


def healthy(cfg: CanaryConfig) -> Readings:
    values = {c.name: 0.0 for c in cfg.checks} | {REQUESTS: 1000.0, TASKS: 1000.0}
    # No failure in 1000 requests or tasks: enough for the sequential test to accept.
    values |= {step_reading(n): 0.0 for n, _ in RATIO_COUNTS.values()}
    values |= {step_reading(total): 1000.0 for _, total in RATIO_COUNTS.values()}
    return Readings(Reading(n, t, v) for n, v in values.items() for t in ("canary", "stable"))


@st.composite
def readings_for(draw: st.DrawFn, cfg: CanaryConfig) -> Readings:
    """Anything Prometheus might say: good, bad, terrible, missing, low traffic."""
    out = []
    for name in [c.name for c in cfg.checks] + [REQUESTS, TASKS] + STEP_COUNTS:
        for track in ("canary", "stable"):
            value = draw(
                st.one_of(
                    st.none(),
                    st.sampled_from([0.0, 1e-4, 0.01, 0.5, 3.0, 100.0, 1000.0, float("inf")]),
                )
            )
            out.append(Reading(name, track, value, "" if value is not None else "empty"))
    return Readings(out)


@st.composite
def active_statuses(draw: st.DrawFn, cfg: CanaryConfig) -> CanaryStatus:
    step = draw(st.integers(0, len(cfg.steps) - 1))
    return CanaryStatus(
        phase=draw(st.sampled_from([Phase.PROGRESSING, Phase.PAUSED])),
        stable_image="app:v1",
        canary_image="app:v2",
        canary_weight=cfg.steps[step],
        current_step=step,
        step_started_at=T0 - timedelta(seconds=draw(st.integers(0, 100_000))),
        failed_checks=draw(st.integers(0, cfg.max_failed_checks - 1)),
        inconclusive_checks=draw(st.integers(0, cfg.max_inconclusive)),
    )


def reconciler(cfg: CanaryConfig, status: CanaryStatus, now: datetime) -> CanaryStatus:
    """What the reconciler does around the engine: the engine's answer to the spec."""
    decision = revised(cfg, status, now)
    return status if decision is None else decision.status


@SETTINGS
@given(st.data())
def test_never_promotes_or_advances_with_a_reading_missing(data: st.DataObject) -> None:
    cfg = data.draw(configs())
    status = data.draw(active_statuses(cfg))
    readings = data.draw(readings_for(cfg))
    check = data.draw(st.sampled_from(cfg.checks))
    # A sequential check reads the step's counts, the others their own reading.
    names = {step_reading(n) for n in RATIO_COUNTS[check.name]} if check.sequential else set()
    missing = data.draw(st.sampled_from(sorted(names or {check.name})))
    kept = [r for r in readings if not (r.name == missing and r.track == "canary")]
    decision = decide(cfg, status, Readings(kept), T0)
    assert decision.action not in (Action.PROMOTE, Action.ADVANCE)


@SETTINGS
@given(st.data())
def test_weights_are_step_values_or_zero_and_rollback_ends_at_zero(data: st.DataObject) -> None:
    cfg = data.draw(configs())
    status = reconciler(cfg, CanaryStatus(phase=Phase.READY, stable_image="app:v1"), T0)
    allowed = {0, *cfg.steps}
    now = T0
    for _ in range(data.draw(st.integers(1, 25))):
        now += timedelta(seconds=cfg.analysis_interval)
        control = data.draw(
            st.sampled_from(
                [Control(), Control(), Control(), Control(promote="step"), Control(resume=True)]
            )
        )
        decision = decide(cfg, status, data.draw(readings_for(cfg)), now, control)
        assert decision.weight in allowed
        if decision.action == Action.ROLLBACK:
            assert decision.weight == 0
            assert decision.status.phase == Phase.ROLLING_BACK
        status = reconciler(cfg, decision.status, now)
        assert status.canary_weight in allowed


@SETTINGS
@given(st.data())
def test_a_canary_whose_pods_are_not_ready_never_gets_traffic(data: st.DataObject) -> None:
    cfg = data.draw(configs())
    status = reconciler(cfg, CanaryStatus(phase=Phase.READY, stable_image="app:v1"), T0)
    now = T0
    for _ in range(data.draw(st.integers(1, 15))):
        now += timedelta(seconds=cfg.analysis_interval)
        control = data.draw(
            st.sampled_from(
                [Control(), Control(promote="step"), Control(resume=True), Control(retry=True)]
            )
        )
        decision = decide(cfg, status, data.draw(readings_for(cfg)), now, control, False)
        assert decision.weight == 0 or decision.status.phase == Phase.PROMOTING
        status = reconciler(cfg, decision.status, now)


@SETTINGS
@given(st.data())
def test_same_inputs_same_decision(data: st.DataObject) -> None:
    cfg = data.draw(configs())
    status = data.draw(active_statuses(cfg))
    readings = data.draw(readings_for(cfg))
    now = T0 + timedelta(seconds=data.draw(st.integers(0, 10_000)))
    control = data.draw(
        st.builds(
            Control,
            promote=st.sampled_from([None, "step", "full"]),
            abort=st.booleans(),
            retry=st.booleans(),
            resume=st.booleans(),
        )
    )
    assert decide(cfg, status, readings, now, control) == decide(
        cfg, status, readings, now, control
    )


@SETTINGS
@given(cfg=configs())
def test_all_good_readings_promote_in_sum_of_step_durations(cfg: CanaryConfig) -> None:
    """Ticks every interval; stepDuration is a multiple of it, so each step takes exactly it."""
    status = reconciler(cfg, CanaryStatus(phase=Phase.READY, stable_image="app:v1"), T0)
    assert status.canary_image == "app:v2"
    start = T0
    decision = decide(cfg, status, healthy(cfg), start)
    assert decision.action == Action.START
    status = decision.status
    now = start
    interval = timedelta(seconds=cfg.analysis_interval)
    total = len(cfg.steps) * cfg.step_duration
    for _ in range(int(total / cfg.analysis_interval) + 2):
        now += interval
        decision = decide(cfg, status, healthy(cfg), now)
        assert decision.action in (Action.HOLD, Action.ADVANCE, Action.PROMOTE)
        status = decision.status
        if decision.action == Action.PROMOTE:
            break
    assert decision.action == Action.PROMOTE
    took = (now - start).total_seconds()
    assert total <= took <= total + cfg.analysis_interval
    finished = decide(cfg, status, healthy(cfg), now)
    assert finished.action == Action.PROMOTED
    assert (finished.status.stable_image, finished.status.canary_image) == ("app:v2", None)


@SETTINGS
@given(cfg=configs(), offset=st.floats(0, 1))
def test_promotion_lags_at_most_one_interval_per_step_when_ticks_do_not_divide_steps(
    cfg: CanaryConfig, offset: float
) -> None:
    stretched = replace(cfg, step_duration=cfg.step_duration + offset * cfg.analysis_interval)
    ready = reconciler(cfg, CanaryStatus(phase=Phase.READY, stable_image="app:v1"), T0)
    status = decide(stretched, ready, healthy(cfg), T0).status
    now = T0
    total = len(cfg.steps) * stretched.step_duration
    for _ in range(int(total / cfg.analysis_interval) + len(cfg.steps) + 2):
        now += timedelta(seconds=cfg.analysis_interval)
        decision = decide(stretched, status, healthy(cfg), now)
        status = decision.status
        if decision.action == Action.PROMOTE:
            break
    assert decision.action == Action.PROMOTE
    took = (now - T0).total_seconds()
    # The engine treats elapsed times within a microsecond of the step as elapsed.
    assert total - 1e-6 * len(cfg.steps) <= took <= total + len(cfg.steps) * cfg.analysis_interval


# --- whole paths through the state machine ------------------------------------------

LIVE = (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)
IMAGES = ("app:v1", "app:v2", "app:v3")


def live(status: CanaryStatus) -> bool:
    """A canary that has not ended yet (it may still be promoted or rolled back)."""
    return status.canary_active and status.phase in LIVE


controls_st = st.sampled_from(
    [
        Control(),
        Control(),
        Control(),
        Control(promote="step"),
        Control(promote="full"),
        Control(abort=True),
        Control(retry=True),
        Control(resume=True),
    ]
)
tracks_st = st.builds(
    TrackState,
    canary_ready=st.booleans(),
    canary_drained=st.booleans(),
    stable_promoted=st.booleans(),
    serving=st.one_of(st.none(), st.just({"app": 4, "worker": 3})),
)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_path_keeps_the_state_machine_invariants(data: st.DataObject) -> None:
    """Any sequence of specs, controls, Deployment states and readings:

    - no path promotes without passing checks (or a user's promote request);
    - every canary that ends is recorded by exactly one history entry, in the decision
      that ends it, and nothing else adds one;
    - the weight is a step's or 0, and 0 in RollingBack and RolledBack;
    - traffic first reaches a canary only once its pods are ready;
    - the conditions say what the phase says.
    """
    base = data.draw(configs())
    status = CanaryStatus(phase=Phase.READY, stable_image="app:v1", stable_revision="app:v1")
    now = T0
    ended = created = 0
    for _ in range(data.draw(st.integers(1, 40))):
        now += timedelta(seconds=base.analysis_interval * data.draw(st.sampled_from([1, 1, 3])))
        image = data.draw(st.sampled_from(IMAGES)) if data.draw(st.booleans()) else None
        if image is not None:
            base = replace(base, image=image, revision=image)
        control = data.draw(controls_st)
        tracks = data.draw(tracks_st)
        readings = data.draw(st.one_of(st.just(healthy(base)), readings_for(base)))
        decision = decide(base, status, readings, now, control, tracks=tracks)
        after = decision.status

        if decision.action == Action.PROMOTE:
            assert decision.tick == Verdict.PASS or "promote" in decision.consumed
            assert after.phase == Phase.PROMOTING
            assert after.stable_image == status.canary_image
        if after.phase == Phase.PROMOTING:
            assert after.stable_image == after.canary_image
            assert after.canary_weight == status.canary_weight  # serves until stable is back

        ends = live(status) and (
            not live(after) or after.canary_started_at != status.canary_started_at
        )
        assert (decision.ended is not None) == ends
        grew = len(after.history) - len(status.history)
        assert grew == (1 if ends else 0) or (len(after.history) == 10 and grew == 0 and ends)
        if ends:
            assert after.history[-1]["image"] == status.canary_image
            assert after.history[-1]["outcome"] == decision.ended.outcome  # type: ignore[union-attr]
        ended += ends
        created += decision.action == Action.CREATE and live(after)
        created += decision.action == Action.START and not live(status)  # a retry

        assert after.canary_weight in {0, *base.steps}
        if after.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            assert after.canary_weight == 0
        if status.canary_weight == 0 and after.canary_weight > 0:
            assert tracks.canary_ready

        conditions = {c["type"]: c["status"] for c in after.conditions}
        assert conditions["Progressing"] == ("True" if after.phase in LIVE else "False") or (
            after.phase == Phase.ROLLING_BACK and conditions["Progressing"] == "True"
        )
        assert conditions["Degraded"] == ("True" if after.phase == Phase.ROLLED_BACK else "False")
        status = after
    # Every canary started is either still live or ended exactly once.
    assert created == ended + (1 if live(status) else 0)
