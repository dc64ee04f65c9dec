"""Canary analysis: the pure decision engine, Prometheus readings and PromQL templates."""

from cricalgo_operator.canary.engine import decide, revised
from cricalgo_operator.canary.model import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Decision,
    MetricCheck,
    Phase,
    Reading,
    Readings,
    TrackState,
    Verdict,
)

__all__ = [
    "Action",
    "CanaryConfig",
    "CanaryStatus",
    "Control",
    "Decision",
    "MetricCheck",
    "Phase",
    "Reading",
    "Readings",
    "TrackState",
    "Verdict",
    "decide",
    "revised",
]
