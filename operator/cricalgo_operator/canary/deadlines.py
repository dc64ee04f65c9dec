"""`canary.progressDeadline`: how long a canary may go without progress (pure).

Progress is the canary's pods becoming ready (before its first step) and a step
advancing (within its stepDuration plus the deadline). A canary paused by a user or after
inconclusive analysis is waiting for a person, not stuck: the time it spends paused does
not count (resuming restarts the step's clock).
"""

from __future__ import annotations

from datetime import datetime

from cricalgo_operator.canary.durations import format_duration
from cricalgo_operator.canary.model import CanaryConfig, CanaryStatus

# The rollback of a canary that made no progress within canary.progressDeadline.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
_EPSILON = 1e-6  # seconds; absorbs float noise in elapsed-time comparisons


def _elapsed(status: CanaryStatus, now: datetime) -> float | None:
    started = status.step_started_at
    return None if started is None else (now - started).total_seconds()


def pods_overdue(config: CanaryConfig, status: CanaryStatus, now: datetime) -> str | None:
    """Why the canary's pods are past the deadline (None: not past it, or no deadline)."""
    deadline, elapsed = config.progress_deadline, _elapsed(status, now)
    if deadline is None or elapsed is None or elapsed + _EPSILON < deadline:
        return None
    return (
        f"{PROGRESS_DEADLINE_EXCEEDED}: canary {status.canary_image} pods not ready within"
        f" {format_duration(deadline)}"
    )


def step_overdue(
    config: CanaryConfig, status: CanaryStatus, now: datetime, holding: str
) -> str | None:
    """Why the current step is past stepDuration + the deadline while the analysis still
    holds it (`holding` says why it holds); None: not past it, or no deadline."""
    deadline, elapsed = config.progress_deadline, _elapsed(status, now)
    if deadline is None or elapsed is None:
        return None
    if elapsed + _EPSILON < config.step_duration + deadline:
        return None
    return (
        f"{PROGRESS_DEADLINE_EXCEEDED}: step {status.current_step} at {status.canary_weight}%"
        f" did not advance within {format_duration(config.step_duration)} +"
        f" {format_duration(deadline)}: {holding}"
    )
