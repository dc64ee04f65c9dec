"""The sequential decision: its statistics (pure) and how the engine acts on them."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from cricalgo_operator.canary import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Phase,
    Reading,
    Readings,
    Verdict,
    decide,
)
from cricalgo_operator.canary import sequential as sq
from cricalgo_operator.canary.engine import AWAITING_EVIDENCE, EVIDENCE_OF_FAULT
from cricalgo_operator.canary.judge import judge
from cricalgo_operator.canary.model import REQUESTS, TASKS, step_reading
from cricalgo_operator.canary.readings import AnalysisTarget, planned_queries
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SLO = 0.05


def config(**canary: object) -> CanaryConfig:
    spec = {
        "stepDuration": "10m",
        "analysisInterval": "15s",
        "decision": "sequential",
        "slo": {"errorRate": SLO},
        **canary,
    }
    return CanaryConfig.from_spec({"image": "cricalgo:v2", "canary": spec})


def running(step: int = 0, started: datetime = T0) -> CanaryStatus:
    return CanaryStatus(
        phase=Phase.PROGRESSING,
        stable_image="cricalgo:v1",
        canary_image="cricalgo:v2",
        canary_weight=(10, 25, 50, 100)[step],
        current_step=step,
        step_started_at=started,
    )


def counted(
    errors: float | None,
    requests: float | None,
    stable: tuple[float, float] = (0.0, 1000.0),
) -> Readings:
    """Readings of a healthy tick for every check, with the step's request counts given."""
    values: dict[str, float | None] = {
        "requests": 500.0,
        "tasks": 200.0,
        "errorRate": 0.0,
        "latencyP95": 0.1,
        "latencyP99": 0.2,
        "queueDepth": 0.0,
        "taskFailureRate": 0.0,
        step_reading("failedTasks"): 0.0,
        step_reading(TASKS): 400.0,
    }
    found = [Reading(n, "canary", v) for n, v in values.items()]
    found += [Reading(n, "stable", v) for n, v in values.items()]
    found += [
        Reading(step_reading("errors"), "canary", errors, "" if errors is not None else "empty"),
        Reading(step_reading(REQUESTS), "canary", requests, "" if requests is not None else "x"),
        Reading(step_reading("errors"), "stable", stable[0]),
        Reading(step_reading(REQUESTS), "stable", stable[1]),
    ]
    return Readings(found)


def error_rate(cfg: CanaryConfig, readings: Readings):  # type: ignore[no-untyped-def]
    return {v.name: v for v in judge(cfg, readings)}["errorRate"]


# --- the statistics --------------------------------------------------------------------


def test_boundaries_are_log_one_over_alpha_and_log_beta() -> None:
    s = sq.Settings(alpha=0.05, beta=0.1)
    assert s.upper == pytest.approx(math.log(20))
    assert s.lower == pytest.approx(math.log(0.1))
    with pytest.raises(ValueError, match="alpha and beta"):
        sq.Settings(alpha=0.0)
    with pytest.raises(ValueError, match="fault_factor"):
        sq.Settings(fault_factor=1.0)


def test_statistic_is_the_log_likelihood_ratio_of_a_fault() -> None:
    # 19 of 190 failed against 0.05: the "overwhelming" tick.
    s = sq.against_threshold(sq.Counts(19, 190), 0.05, 2.0)
    expected = 19 * math.log(2) + 171 * math.log(0.9 / 0.95)
    assert s == pytest.approx(expected)
    assert sq.judge(s, sq.Settings()).outcome == sq.Outcome.FAULT
    # 2 of 30 "fails" a counted tick on noise; here it is no evidence either way.
    noise = sq.against_threshold(sq.Counts(2, 30), 0.05, 2.0)
    assert sq.judge(noise, sq.Settings()).outcome == sq.Outcome.UNDECIDED


def test_edge_rates_and_inconsistent_counts() -> None:
    assert sq.against_threshold(sq.Counts(0, 0), 0.05) == 0.0
    assert sq.against_threshold(sq.Counts(1, 10), 0.0) == math.inf
    assert sq.against_threshold(sq.Counts(0, 10), 0.0) == -math.inf
    assert sq.against_threshold(sq.Counts(10, 10), 1.0) == -math.inf
    # p1 stays below 1 for a lenient SLO
    assert math.isfinite(sq.against_threshold(sq.Counts(5, 10), 0.6, 5.0))
    # two queries may disagree by a little: failures never exceed the total
    assert sq.Counts(12, 10).clamped() == sq.Counts(10, 10)
    assert sq.Counts(-1, -5).clamped() == sq.Counts(0, 0)


def test_comparison_with_stable() -> None:
    same = sq.against_stable(sq.Counts(10, 100), sq.Counts(90, 900), 1.0)
    worse = sq.against_stable(sq.Counts(30, 100), sq.Counts(90, 900), 1.0)
    assert same < 0 < worse
    assert sq.judge(worse, sq.Settings()).outcome == sq.Outcome.FAULT
    assert sq.against_stable(sq.Counts(5, 100), sq.Counts(0, 0), 1.0) == 0.0
    assert sq.allowed_ratio(sq.Counts(10, 1000), None, 0.2) == pytest.approx(1.2)
    # absolute: +0.01 on a stable at ~1 % is about twice the stable's rate
    assert sq.allowed_ratio(sq.Counts(10, 1000), 0.01, None) == pytest.approx(2.0, rel=0.1)
    assert sq.allowed_ratio(sq.Counts(10, 1000), 0.01, 0.2) == pytest.approx(1.2)
    assert sq.allowed_ratio(sq.Counts(0, 0), None, None) == 1.0


counts = st.floats(0, 5000, allow_nan=False)
rates = st.floats(0.001, 0.5)
factors = st.sampled_from([1.5, 2.0, 3.0, 5.0])


@settings(max_examples=200, deadline=None)
@given(counts, counts, st.floats(0, 100), rates, factors)
def test_monotone_in_failures_and_in_successes(
    failures: float, extra: float, more: float, p0: float, factor: float
) -> None:
    """More failures in the same traffic never weigh less; more successes never more."""
    total = failures + extra
    base = sq.against_threshold(sq.Counts(failures, total), p0, factor)
    more_failures = sq.against_threshold(sq.Counts(min(failures + more, total), total), p0, factor)
    more_successes = sq.against_threshold(sq.Counts(failures, total + more), p0, factor)
    assert more_failures >= base - 1e-9
    assert more_successes <= base + 1e-9


@settings(max_examples=200, deadline=None)
@given(counts, counts, counts, counts, st.floats(0, 100), st.floats(1, 3), factors)
def test_stable_comparison_is_monotone(
    kc: float, nc: float, ks: float, ns: float, more: float, ratio: float, factor: float
) -> None:
    """A canary failure in place of a success weighs more, a stable one less; more
    successes on the canary weigh less, more on the stable more."""
    canary, stable = sq.Counts(kc, kc + nc), sq.Counts(ks, ks + ns)

    def s(c: sq.Counts, st_: sq.Counts) -> float:
        return sq.against_stable(c, st_, ratio, factor)

    base = s(canary, stable)
    shift = min(more, nc)
    assert s(sq.Counts(kc + shift, kc + nc), stable) >= base - 1e-9
    assert s(canary, sq.Counts(ks + min(more, ns), ks + ns)) <= base + 1e-9
    if kc + nc > 0 and ks + ns > 0:
        assert s(sq.Counts(kc, kc + nc + more), stable) <= base + 1e-9
        assert s(canary, sq.Counts(ks, ks + ns + more)) >= base - 1e-9


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, 50))
def test_verdict_is_monotone_in_the_evidence(errors: float, requests: float, more: float) -> None:
    """More failures in the same step never move the verdict towards passing."""
    cfg = config()
    rank = {"healthy": 0, "undecided": 1, "fault": 2}

    def outcome(e: float, n: float) -> int:
        v = error_rate(cfg, counted(min(e, n), n))
        assert v.evidence is not None
        return rank[str(v.evidence.result.outcome)]

    total = errors + requests
    assert outcome(errors + more, total + more) >= outcome(errors, total + more)


# --- the engine ----------------------------------------------------------------------


def test_evidence_of_a_fault_rolls_back_at_once_with_the_evidence_in_status() -> None:
    cfg = config()
    d = decide(cfg, running(), counted(19, 190), T0 + timedelta(seconds=15))
    assert d.action == Action.ROLLBACK
    assert d.reason == EVIDENCE_OF_FAULT
    assert d.status.canary_weight == 0
    shown = {v.name: v.to_dict() for v in d.verdicts}["errorRate"]
    assert shown["verdict"] == "fail"
    assert shown["evidence"]["failures"] == 19
    assert shown["evidence"]["total"] == 190
    assert shown["evidence"]["statistic"] >= shown["evidence"]["rollbackAt"]
    assert shown["evidence"]["rollbackAt"] == pytest.approx(math.log(20), abs=1e-4)
    assert shown["evidence"]["outcome"] == "fault"


def test_count_decision_does_not_use_the_step_counts() -> None:
    cfg = config(decision="count")
    d = decide(cfg, running(), counted(19, 190), T0 + timedelta(seconds=15))
    assert d.action == Action.HOLD  # the tick's own errorRate reading is 0


def test_step_advances_only_once_the_test_accepts_the_canary() -> None:
    cfg = config()
    after = T0 + timedelta(minutes=10)
    undecided = decide(cfg, running(), counted(6, 100), after)
    assert undecided.action == Action.HOLD
    assert undecided.reason == AWAITING_EVIDENCE
    assert "errorRate" in undecided.message
    accepted = decide(cfg, running(), counted(8, 400), after)
    assert accepted.action == Action.ADVANCE
    # within the step, an undecided test holds without counting a failed check
    early = decide(cfg, running(), counted(6, 100), T0 + timedelta(minutes=1))
    assert early.action == Action.HOLD
    assert early.status.failed_checks == 0


def test_no_counts_is_no_data_and_little_traffic_cannot_accept() -> None:
    cfg = config()
    after = T0 + timedelta(minutes=10)
    missing = decide(cfg, running(), counted(None, None), after)
    assert missing.action == Action.HOLD
    assert error_rate(cfg, counted(None, None)).verdict == Verdict.NODATA
    few = error_rate(cfg, counted(0, 5))
    assert few.verdict == Verdict.NODATA
    assert "minRequests" in few.reason
    # ... but a fault proven on little traffic still rolls back
    assert error_rate(cfg, counted(9, 15)).verdict == Verdict.FAIL


def test_compare_to_stable_runs_on_both_tracks_counts() -> None:
    cfg = config(
        metrics=[{"name": "errorRate", "compareTo": "stable", "maxRelativeIncrease": 0.5}],
    )
    check = {c.name: c for c in cfg.checks}["errorRate"]
    assert check.sequential
    assert check.max is None
    worse = error_rate(cfg, counted(40, 400, stable=(36, 3600)))
    assert worse.verdict == Verdict.FAIL
    assert worse.evidence is not None
    assert worse.evidence.stable == sq.Counts(36, 3600)
    like_stable = error_rate(cfg, counted(4, 400, stable=(36, 3600)))
    assert like_stable.verdict == Verdict.PASS
    assert error_rate(cfg, counted(4, 400, stable=(1, 0))).evidence is not None


def test_queries_count_the_whole_step_on_the_tracks_compared() -> None:
    cfg = config(metrics=[{"name": "errorRate", "compareTo": "stable", "max": 0.05}])
    target = AnalysisTarget("ns", "pay", "2.0.0", "1.0.0", step_seconds=95)
    plan = {(name, track): q for name, track, q in planned_queries(cfg, target)}
    errors = plan[(step_reading("errors"), "canary")]
    assert "[95s]" in errors
    assert 'status=~"5.."' in errors
    assert 'version="2.0.0"' in errors
    assert 'version="1.0.0"' in plan[(step_reading("errors"), "stable")]
    assert "[95s]" in plan[(step_reading(REQUESTS), "stable")]
    assert (step_reading("failedTasks"), "canary") in plan
    assert (step_reading("failedTasks"), "stable") not in plan
    # the tick's own readings keep the analysis interval
    assert "[15s]" in plan[("requests", "canary")]


# --- simulated traffic: the stated error rates ---------------------------------------


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def false_rollbacks(p: float, alpha: float, seeds: int, looks: int, per_look: int) -> int:
    """Steps (one per seed) the test rolls back on traffic failing at rate p."""
    cfg = config(sequential={"falseRollbackRate": alpha})
    rolled = 0
    for seed in range(seeds):
        rng = random.Random(seed)
        errors = requests = 0
        for _ in range(looks):
            requests += per_look
            errors += binomial(rng, per_look, p)
            if error_rate(cfg, counted(errors, requests)).verdict == Verdict.FAIL:
                rolled += 1
                break
    return rolled


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.sampled_from([0.02, 0.05, 0.1]), st.sampled_from([0.8, 1.0]))
def test_false_rollbacks_stay_within_alpha_however_often_it_looks(
    alpha: float, share_of_slo: float
) -> None:
    """A canary failing at (or below) the SLO's rate, looked at 80 times per step."""
    seeds = 300
    rolled = false_rollbacks(SLO * share_of_slo, alpha, seeds, looks=80, per_look=48)
    assert rolled / seeds <= alpha


def test_a_fault_at_twice_the_slo_is_found_in_most_steps() -> None:
    """The other side: beta bounds how often such a fault would be accepted instead."""
    found = 0
    cfg = config()
    for seed in range(100):
        rng = random.Random(seed)
        errors = requests = 0
        for _ in range(30):
            requests += 48
            errors += binomial(rng, 48, 2 * SLO)
            outcome = error_rate(cfg, counted(errors, requests)).evidence
            assert outcome is not None
            if outcome.result.outcome != sq.Outcome.UNDECIDED:
                found += outcome.result.outcome == sq.Outcome.FAULT
                break
    assert found >= 90


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 3),
    st.integers(0, 10_000),
    st.one_of(st.none(), st.floats(0, 19)),
    st.floats(0, 1),
)
def test_never_advances_or_promotes_on_no_data(
    step: int, seconds: int, requests: float | None, share_failed: float
) -> None:
    """No counts, or fewer than minRequests requests in the step, never pass a step."""
    cfg = config()
    errors = None if requests is None else requests * share_failed
    d = decide(cfg, running(step), counted(errors, requests), T0 + timedelta(seconds=seconds))
    assert d.action not in (Action.ADVANCE, Action.PROMOTE)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(st.sampled_from([0.05, 0.1]), st.sampled_from([0.01, 0.05]))
def test_false_rollbacks_against_stable_stay_within_alpha(alpha: float, rate: float) -> None:
    """A canary failing exactly as often as the stable, at a 10 % share of the traffic."""
    cfg = config(
        sequential={"falseRollbackRate": alpha},
        metrics=[{"name": "errorRate", "compareTo": "stable"}],
    )
    seeds, rolled = 300, 0
    for seed in range(seeds):
        rng = random.Random(seed)
        errors = requests = stable_errors = stable_requests = 0
        for _ in range(40):
            requests += 48
            errors += binomial(rng, 48, rate)
            stable_requests += 432
            stable_errors += binomial(rng, 432, rate)
            readings = counted(errors, requests, stable=(stable_errors, stable_requests))
            if error_rate(cfg, readings).verdict == Verdict.FAIL:
                rolled += 1
                break
    assert rolled / seeds <= alpha
