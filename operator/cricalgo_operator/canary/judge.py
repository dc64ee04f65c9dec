"""Judging one tick's readings against the checks: pure, one verdict per check."""

from __future__ import annotations

import math
from collections.abc import Iterable

from cricalgo_operator.canary.model import (
    CANARY,
    STABLE,
    CanaryConfig,
    MetricCheck,
    MetricVerdict,
    Readings,
    Verdict,
)


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def judge_check(check: MetricCheck, readings: Readings, config: CanaryConfig) -> MetricVerdict:
    """The verdict of one check on the canary track. No data never passes."""
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
