"""Canary analysis: the pure decision engine, Prometheus readings and PromQL templates."""

from cricalgo_operator.canary.engine import canary_created, decide, promotion_finished
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
    "Verdict",
    "canary_created",
    "decide",
    "promotion_finished",
]
