"""Sequential probability ratio tests on failure counts: pure maths, no I/O.

A ratio SLO (error rate, task-failure rate) is a statement about a Bernoulli process:
each request fails with some probability p, and the SLO says p <= p0. The test weighs
the counts of the current step (failures k out of n) as the log-likelihood ratio of a
fault, p = p1 = faultFactor x p0, against the allowed rate p0:

    S = k log(p1 / p0) + (n - k) log((1 - p1) / (1 - p0))

Under any p <= p0 the likelihood ratio exp(S) is a non-negative supermartingale with
mean at most 1, so by Ville's inequality P(sup exp(S) >= 1/alpha) <= alpha: however often
the statistic is looked at (every tick, every probe between ticks), it reaches the
rollback boundary log(1/alpha) with probability at most alpha. Under p >= p1 the reverse
ratio exp(-S) is one, so S falls to the acceptance boundary log(beta) with probability at
most beta: a step advances on a canary that fails at p1 or more at most that often.
Both bounds are exact, not Wald's approximations, because the test never stops early:
it keeps watching after either boundary is reached.

Comparison with the stable track (two samples) conditions on the failures: with the
canary's rate r times the stable's and the two tracks' requests n_c and n_s, each failure
is the canary's with probability q(r) = r w / (1 + r w), w = n_c / n_s. The same ratio
test then runs on (k_c of k_c + k_s) between q(r1) and q(r0), r1 = faultFactor x r0.
It is exact for Poisson traffic at a constant split (the weight is fixed within a step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    FAULT = "fault"  # S reached the rollback boundary: roll back now
    HEALTHY = "healthy"  # S reached the acceptance boundary: the step may advance
    UNDECIDED = "undecided"  # keep watching


@dataclass(frozen=True)
class Counts:
    """Failures out of a total, over one window (Prometheus increases may be fractional)."""

    failures: float
    total: float

    def clamped(self) -> Counts:
        """Non-negative, failures within the total (two queries may disagree slightly)."""
        total = max(0.0, self.total)
        return Counts(min(max(0.0, self.failures), total), total)

    @property
    def rate(self) -> float | None:
        return self.failures / self.total if self.total > 0 else None


@dataclass(frozen=True)
class Settings:
    """alpha: false-rollback rate; beta: missed-fault rate; fault_factor: p1 / p0."""

    alpha: float = 0.05
    beta: float = 0.1
    fault_factor: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and 0 < self.beta < 1):
            raise ValueError("alpha and beta must be strictly between 0 and 1")
        if self.fault_factor <= 1:
            raise ValueError("fault_factor must be greater than 1")

    @property
    def upper(self) -> float:
        """The rollback boundary, log(1 / alpha)."""
        return -math.log(self.alpha)

    @property
    def lower(self) -> float:
        """The acceptance boundary, log(beta)."""
        return math.log(self.beta)


@dataclass(frozen=True)
class Result:
    statistic: float
    upper: float
    lower: float
    outcome: Outcome


def fault_rate(p0: float, fault_factor: float) -> float:
    """p1: faultFactor x p0, kept below 1 (halfway from p0 to 1 at most)."""
    return min(p0 * fault_factor, (1.0 + p0) / 2.0)


def _llr(k: float, n: float, p0: float, p1: float) -> float:
    """k failures of n, fault p1 against allowed p0 (0 < p0 < p1 < 1)."""
    return k * math.log(p1 / p0) + (n - k) * math.log1p(-p1) - (n - k) * math.log1p(-p0)


def against_threshold(counts: Counts, p0: float, fault_factor: float = 2.0) -> float:
    """The statistic S of the canary's counts against the allowed failure rate p0."""
    c = counts.clamped()
    if c.total == 0:
        return 0.0
    if p0 >= 1:
        return -math.inf  # everything is allowed
    if p0 <= 0:
        # No failure allowed: one is conclusive, and none is all the data can show.
        return math.inf if c.failures > 0 else -math.inf
    return _llr(c.failures, c.total, p0, fault_rate(p0, fault_factor))


def against_stable(
    canary: Counts, stable: Counts, allowed_ratio: float, fault_factor: float = 2.0
) -> float:
    """The statistic S of canary vs stable: fault = fault_factor x allowed_ratio x stable.

    `allowed_ratio` (>= 1): the canary's rate may be this many times the stable's.
    """
    c, s = canary.clamped(), stable.clamped()
    if c.total == 0 or s.total == 0:
        return 0.0
    w = c.total / s.total
    r0 = max(allowed_ratio, 1e-12)
    # log q(r) = log(r w) - log1p(r w) and log(1 - q(r)) = -log1p(r w): stable for any w.
    x = r0 * w
    if math.isfinite(fault_factor * x):
        shift = math.log1p(x) - math.log1p(fault_factor * x)
    else:  # a stable with next to no traffic: every failure is the canary's anyway
        shift = -math.log(fault_factor)
    return c.failures * math.log(fault_factor) + (c.failures + s.failures) * shift


def judge(statistic: float, settings: Settings) -> Result:
    """The outcome of a statistic against the boundaries of `settings`."""
    upper, lower = settings.upper, settings.lower
    if statistic >= upper:
        outcome = Outcome.FAULT
    elif statistic <= lower:
        outcome = Outcome.HEALTHY
    else:
        outcome = Outcome.UNDECIDED
    return Result(statistic, upper, lower, outcome)


def allowed_ratio(
    stable: Counts, max_increase: float | None, max_relative_increase: float | None
) -> float:
    """The canary/stable rate ratio a comparison allows (the stricter allowance wins).

    An absolute `max_increase` becomes a ratio at the stable's observed rate (with half
    a failure added, so a stable without failures still has a finite ratio).
    """
    ratios = []
    if max_relative_increase is not None:
        ratios.append(1.0 + max_relative_increase)
    if max_increase is not None:
        s = stable.clamped()
        rate = (s.failures + 0.5) / (s.total + 1.0)
        ratios.append(1.0 + max_increase / rate)
    return min(ratios) if ratios else 1.0
