"""The canary decision on simulated traffic: the real `decide()`, counts drawn at known rates.

Not a test and not part of the product: the cheap mode of `make bench-canary` for the many
runs a false-rollback rate needs. It drives `cricalgo_operator.canary.decide` the way the
analysis daemon does (a tick every `analysisInterval`, fail-fast probes every interval/4
that act only on an immediate rollback), with the readings Prometheus would return:
requests arrive as a Poisson process at the canary's share of the traffic, each failing
with the given probability, counted in one-second scrapes and read one scrape late.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cricalgo_operator.canary import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Phase,
    Reading,
    Readings,
    decide,
)
from cricalgo_operator.canary.engine import IMMEDIATE_ROLLBACKS
from cricalgo_operator.canary.model import REQUESTS, TASKS, step_reading

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCRAPE_LAG_S = 1
PROBES_PER_INTERVAL = 4  # as the daemon


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method, in chunks so exp(-mean) never underflows)."""
    total = 0
    while mean > 0:
        chunk = min(mean, 30.0)
        mean -= chunk
        limit, product, count = math.exp(-chunk), rng.random(), 0
        while product > limit:
            product *= rng.random()
            count += 1
        total += count
    return total


@dataclass
class Outcome:
    rolled_back_after: float | None  # seconds from the canary's first traffic
    reason: str
    errors_served: int  # failed requests the canary answered until weight 0
    promoted: bool


def simulate(
    spec_canary: dict[str, Any],
    error_rate: float,
    canary_rps_at_10: float,
    seed: int,
    horizon_s: float,
) -> Outcome:
    """One canary from its first step: traffic failing at `error_rate` from the start."""
    cfg = CanaryConfig.from_spec({"image": "app:v2", "canary": spec_canary})
    rng = random.Random(seed)
    status = CanaryStatus(
        phase=Phase.PROGRESSING,
        stable_image="app:v1",
        canary_image="app:v2",
        canary_weight=cfg.steps[0],
        current_step=0,
        step_started_at=T0,
    )
    interval = cfg.analysis_interval
    probe = interval / PROBES_PER_INTERVAL
    requests: list[int] = []  # per second
    errors: list[int] = []

    def window(bins: list[int], start: float, end: float) -> float:
        return float(sum(bins[max(0, int(start)) : max(0, int(end))]))

    def readings(now: float, step_start: float) -> Readings:
        seen = now - SCRAPE_LAG_S
        tick_n = window(requests, seen - interval, seen)
        tick_k = window(errors, seen - interval, seen)
        step_n = window(requests, step_start, seen)
        step_k = window(errors, step_start, seen)
        values = {
            REQUESTS: tick_n,
            "errorRate": tick_k / tick_n if tick_n else None,
            "latencyP95": 0.3,
            "latencyP99": 0.3,
            "queueDepth": 0.0,
            TASKS: tick_n,
            "taskFailureRate": 0.0 if tick_n else None,
            step_reading(REQUESTS): step_n,
            step_reading("errors"): step_k,
            step_reading(TASKS): step_n,
            step_reading("failedTasks"): 0.0,
        }
        return Readings(Reading(name, "canary", value) for name, value in values.items())

    # Decision times as the daemon schedules them: ticks, and probes between them.
    times: list[tuple[float, bool]] = []
    t = 0.0
    while t <= horizon_s:
        times.append((t, False))
        p = t + probe
        while p < t + interval - probe / 2:
            times.append((p, True))
            p += probe
        t += interval
    step_start = 0.0
    for now, is_probe in times:
        while len(requests) < math.ceil(now) + 1:
            rate = canary_rps_at_10 * status.canary_weight / 10
            n = poisson(rng, rate * (1 - error_rate))
            k = poisson(rng, rate * error_rate)
            requests.append(n + k)
            errors.append(k)
        at = T0 + timedelta(seconds=now)
        decision = decide(cfg, status, readings(now, step_start), at)
        if is_probe and decision.reason not in IMMEDIATE_ROLLBACKS:
            continue
        if decision.action == Action.ROLLBACK:
            # The errors of the second the rollback happens in are served up to it.
            return Outcome(now, decision.reason, int(window(errors, 0, now)), False)
        if decision.action == Action.PROMOTE:
            return Outcome(None, decision.reason, int(window(errors, 0, now)), True)
        if decision.status.step_started_at != status.step_started_at:
            step_start = now
        status = decision.status
    return Outcome(None, "horizon", int(window(errors, 0, horizon_s)), False)
