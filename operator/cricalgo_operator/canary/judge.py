"""Judging one tick's readings against the checks: pure, one verdict per check."""

from __future__ import annotations

import math
from collections.abc import Iterable

from cricalgo_operator.canary import sequential
from cricalgo_operator.canary.model import (
    CANARY,
    RATIO_COUNTS,
    STABLE,
    CanaryConfig,
    Evidence,
    MetricCheck,
    MetricVerdict,
    Readings,
    Verdict,
    step_reading,
)
from cricalgo_operator.canary.sequential import Counts, Outcome


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def judge_check(check: MetricCheck, readings: Readings, config: CanaryConfig) -> MetricVerdict:
    """The verdict of one check on the canary track. No data never passes."""
    if check.sequential and (check.max is not None or check.compare_to == STABLE):
        return judge_sequential(check, readings, config)
    factor = config.fail_fast_factor

    def verdict(
        value: float | None, threshold: float | None, v: Verdict, reason: str, severe: bool = False
    ) -> MetricVerdict:
        return MetricVerdict(check.name, CANARY, value, threshold, v, reason, severe)

    bound = check.max if check.max is not None else check.min
    if check.volume is not None:
        volume = readings.get(check.volume)
        if volume.value is None:
            return verdict(None, bound, Verdict.NODATA, f"no {check.volume} count: {volume.error}")
        if volume.value < config.min_requests:
            return verdict(
                None,
                bound,
                Verdict.NODATA,
                f"{_fmt(volume.value)} {check.volume} < minRequests {config.min_requests}",
            )
    reading = readings.get(check.name)
    value = reading.value
    if value is None:
        return verdict(None, bound, Verdict.NODATA, f"no data: {reading.error or 'empty'}")

    if check.max is not None and value > check.max:
        severe = value > check.max * factor if check.max > 0 else value > 0
        return verdict(
            value, check.max, Verdict.FAIL, f"{_fmt(value)} > max {_fmt(check.max)}", severe
        )
    if check.min is not None and value < check.min:
        severe = check.min > 0 and value < check.min / factor
        return verdict(
            value, check.min, Verdict.FAIL, f"{_fmt(value)} < min {_fmt(check.min)}", severe
        )

    if check.compare_to == STABLE:
        stable = readings.get(check.name, STABLE)
        if stable.value is None or math.isinf(stable.value):
            why = stable.error or "+Inf"
            return verdict(value, None, Verdict.NODATA, f"no stable reading to compare: {why}")
        allowances = []
        if check.max_increase is not None:
            allowances.append(check.max_increase)
        if check.max_relative_increase is not None:
            allowances.append(abs(stable.value) * check.max_relative_increase)
        allowed = min(allowances) if allowances else 0.0
        limit = stable.value + allowed
        if value > limit:
            increase = value - stable.value
            severe = increase > allowed * factor if allowed > 0 else False
            reason = f"{_fmt(value)} > stable {_fmt(stable.value)} + {_fmt(allowed)}"
            return verdict(value, limit, Verdict.FAIL, reason, severe)
        return verdict(value, limit, Verdict.PASS, f"{_fmt(value)} <= stable-based {_fmt(limit)}")

    return verdict(value, bound, Verdict.PASS, f"{_fmt(value)} within bounds")


def _step_counts(check: MetricCheck, readings: Readings, track: str) -> Counts | str:
    """The step's (failures, total) of a ratio check on `track`, or why there are none."""
    failures_name, total_name = RATIO_COUNTS[check.name]
    failures = readings.get(step_reading(failures_name), track)
    total = readings.get(step_reading(total_name), track)
    for reading in (total, failures):
        if reading.value is None or math.isinf(reading.value):
            return f"no {track} {reading.name} count: {reading.error or 'empty'}"
    assert failures.value is not None
    assert total.value is not None
    return Counts(failures.value, total.value).clamped()


def judge_sequential(check: MetricCheck, readings: Readings, config: CanaryConfig) -> MetricVerdict:
    """The sequential test of a ratio check on the counts of the current step.

    The statistic reaching the rollback boundary fails the check conclusively (the engine
    rolls back at once, whatever the volume); below it the check passes, and the step may
    advance only once the statistic has reached the acceptance boundary. With both a
    threshold and a comparison, each test gets half of alpha (the rollback boundary is a
    union of two).
    """
    settings = config.sequential

    def verdict(
        value: float | None, threshold: float | None, v: Verdict, reason: str, e: Evidence | None
    ) -> MetricVerdict:
        return MetricVerdict(check.name, CANARY, value, threshold, v, reason, False, e)

    canary = _step_counts(check, readings, CANARY)
    if isinstance(canary, str):
        return verdict(None, check.max, Verdict.NODATA, canary, None)
    stable: Counts | None = None
    statistics: list[float] = []
    threshold = check.max
    if check.max is not None:
        statistics.append(sequential.against_threshold(canary, check.max, settings.fault_factor))
    if check.compare_to == STABLE:
        found = _step_counts(check, readings, STABLE)
        if isinstance(found, str):
            return verdict(canary.rate, check.max, Verdict.NODATA, found, None)
        stable = found
        ratio = sequential.allowed_ratio(stable, check.max_increase, check.max_relative_increase)
        statistics.append(sequential.against_stable(canary, stable, ratio, settings.fault_factor))
        if stable.rate is not None and threshold is None:
            threshold = stable.rate * ratio
    if len(statistics) > 1:
        settings = sequential.Settings(settings.alpha / 2, settings.beta, settings.fault_factor)
    result = sequential.judge(max(statistics, default=0.0), settings)
    evidence = Evidence(canary, stable, result)
    counted = f"{_fmt(canary.failures)} of {_fmt(canary.total)} failed"
    if stable is not None:
        counted += f", stable {_fmt(stable.failures)} of {_fmt(stable.total)}"
    where = f"S={_fmt(result.statistic)} ({counted})"
    if result.outcome == Outcome.FAULT:
        reason = f"{where} >= rollback boundary {_fmt(result.upper)}"
        return verdict(canary.rate, threshold, Verdict.FAIL, reason, evidence)
    if canary.total < config.min_requests:
        volume = RATIO_COUNTS[check.name][1]
        reason = f"{_fmt(canary.total)} {volume} < minRequests {config.min_requests}"
        return verdict(canary.rate, threshold, Verdict.NODATA, reason, evidence)
    if result.outcome == Outcome.HEALTHY:
        reason = f"{where} <= acceptance boundary {_fmt(result.lower)}"
    else:
        reason = f"{where}, undecided between {_fmt(result.lower)} and {_fmt(result.upper)}"
    return verdict(canary.rate, threshold, Verdict.PASS, reason, evidence)


def judge(config: CanaryConfig, readings: Readings) -> tuple[MetricVerdict, ...]:
    return tuple(judge_check(check, readings, config) for check in config.checks)


def tick_verdict(verdicts: Iterable[MetricVerdict]) -> Verdict:
    """Fail if any check failed, else no data if any had none, else pass."""
    seen = {v.verdict for v in verdicts}
    if Verdict.FAIL in seen:
        return Verdict.FAIL
    if Verdict.NODATA in seen or not seen:
        return Verdict.NODATA
    return Verdict.PASS
