"""The canary engine's vocabulary: configuration, state, readings, controls, decisions.

Everything here is plain immutable data, parsed from (and rendered back to) the custom
resource's dictionaries, so the engine itself never touches Kubernetes or a clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from cricalgo_operator.canary.durations import parse_duration
from cricalgo_operator.canary.sequential import Counts, Result, Settings
from cricalgo_operator.canary.state import CanaryStatus as CanaryStatus
from cricalgo_operator.canary.state import format_time

CANARY = "canary"
STABLE = "stable"
# Volume readings: how much traffic the canary saw in the window (gate for ratio metrics).
REQUESTS = "requests"
TASKS = "tasks"
# Ratio checks the sequential decision judges on counts: (failures, total) reading names.
RATIO_COUNTS: Mapping[str, tuple[str, str]] = {
    "errorRate": ("errors", REQUESTS),
    "taskFailureRate": ("failedTasks", TASKS),
}
COUNT = "count"
SEQUENTIAL = "sequential"
DEFAULT_DECISION = SEQUENTIAL  # the CRD default too


def step_reading(name: str) -> str:
    """The name of a count reading taken over the current step (not the tick's window)."""
    return f"{name}@step"


class Phase(StrEnum):
    INITIALIZING = "Initializing"
    READY = "Ready"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


class Action(StrEnum):
    """What a decision does to the canary (the runner writes its status and applies the
    children that change; the action names the Event and the metrics)."""

    IDLE = "idle"  # no canary running and none to start
    INITIALIZE = "initialize"  # the first revision becomes the stable one
    CREATE = "create"  # a new revision gets a canary track at weight 0
    REMOVE = "remove"  # the spec went back to the stable revision: the canary goes
    START = "start"  # the canary gets the first step's weight
    HOLD = "hold"  # keep the weight
    ADVANCE = "advance"  # move to the next step's weight
    PAUSE = "pause"  # stop advancing until resumed
    RESUME = "resume"  # continue after a pause
    PROMOTE = "promote"  # the stable track takes the canary's version
    PROMOTED = "promoted"  # the stable serves again at full size: the canary goes
    ROLLBACK = "rollback"  # weight 0 at once, scale the canary to 0
    ROLLED_BACK = "rolledBack"  # the canary has no pod left


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NODATA = "nodata"


@dataclass(frozen=True)
class MetricCheck:
    """One judged metric: fixed bounds and/or a comparison with the stable track."""

    name: str
    query: str | None = None  # PromQL template; None for built-ins (taken from the template set)
    min: float | None = None
    max: float | None = None
    compare_to: str | None = None  # "stable"
    max_increase: float | None = None
    max_relative_increase: float | None = None
    volume: str | None = None  # REQUESTS / TASKS: reading that must reach minRequests
    sequential: bool = False  # judged by the sequential test on the step's counts

    @classmethod
    def from_spec(cls, item: Mapping[str, Any]) -> MetricCheck:
        def num(key: str) -> float | None:
            value = item.get(key)
            return None if value is None else float(value)

        return cls(
            name=str(item["name"]),
            query=item.get("query"),
            min=num("min"),
            max=num("max"),
            compare_to=item.get("compareTo"),
            max_increase=num("maxIncrease"),
            max_relative_increase=num("maxRelativeIncrease"),
        )


DEFAULT_SLO: Mapping[str, float] = {
    "errorRate": 0.005,
    "latencyP95": 2.0,
    "latencyP99": 5.0,
    "queueDepth": 50.0,
    "taskFailureRate": 0.01,
}
# Which volume reading gates each built-in SLO (queue depth is meaningful at any traffic).
_SLO_VOLUME = {
    "errorRate": REQUESTS,
    "latencyP95": REQUESTS,
    "latencyP99": REQUESTS,
    "queueDepth": None,
    "taskFailureRate": TASKS,
}


def slo_checks(slo: Mapping[str, Any]) -> tuple[MetricCheck, ...]:
    """The built-in checks of `spec.canary.slo` (each an upper bound on the canary track)."""
    return tuple(
        MetricCheck(name=name, max=float(slo.get(name, default)), volume=_SLO_VOLUME[name])
        for name, default in DEFAULT_SLO.items()
    )


def _optional_duration(value: Any) -> float | None:
    return None if value is None else parse_duration(value)


@dataclass(frozen=True)
class CanaryConfig:
    """`spec.canary` plus the target version, with the CRD's defaults applied."""

    image: str
    revision: str  # identity of the desired pod template (the image when nothing finer is known)
    pod_inputs: Mapping[str, Any] = field(default_factory=dict)  # what the stable takes over
    generation: int = 0  # metadata.generation, for the conditions
    steps: tuple[int, ...] = (10, 25, 50, 100)
    step_duration: float = 1800.0
    analysis_interval: float = 60.0
    max_failed_checks: int = 3
    fail_fast_factor: float = 5.0
    max_inconclusive: int = 5
    min_requests: int = 20
    on_no_data: str = "hold"
    paused: bool = False
    progress_deadline: float | None = None  # seconds; None: a canary may wait for ever
    templates: str = "workload"
    prometheus_url: str | None = None
    checks: tuple[MetricCheck, ...] = field(default_factory=lambda: slo_checks({}))
    decision: str = DEFAULT_DECISION
    sequential: Settings = field(default_factory=Settings)

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        revision: str | None = None,
        pod_inputs: Mapping[str, Any] | None = None,
        generation: int = 0,
    ) -> CanaryConfig:
        """Parse a CricAlgoDeployment `spec`; `revision` defaults to the image."""
        canary: Mapping[str, Any] = spec.get("canary") or {}
        checks = list(slo_checks(canary.get("slo") or {}))
        for item in canary.get("metrics") or []:
            custom = MetricCheck.from_spec(item)
            # A custom metric named like a built-in replaces it (override threshold or query).
            checks = [c for c in checks if c.name != custom.name]
            checks.append(custom)
        decision = str(canary.get("decision", DEFAULT_DECISION))
        if decision == SEQUENTIAL:
            # Built-in ratio queries have count templates; a custom query is a ratio only.
            checks = [
                replace(c, sequential=True) if c.name in RATIO_COUNTS and not c.query else c
                for c in checks
            ]
        knobs: Mapping[str, Any] = canary.get("sequential") or {}
        settings = Settings(
            alpha=float(knobs.get("falseRollbackRate", Settings.alpha)),
            beta=float(knobs.get("missedFaultRate", Settings.beta)),
            fault_factor=float(knobs.get("faultFactor", Settings.fault_factor)),
        )
        steps = tuple(int(s) for s in canary.get("steps") or (10, 25, 50, 100))
        if not steps or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"canary.steps must be non-empty and strictly increasing: {steps}")
        image = str(spec["image"])
        return cls(
            image=image,
            revision=revision or image,
            pod_inputs=dict(pod_inputs) if pod_inputs is not None else {"image": image},
            generation=generation,
            steps=steps,
            step_duration=parse_duration(canary.get("stepDuration", "30m")),
            analysis_interval=parse_duration(canary.get("analysisInterval", "1m")),
            max_failed_checks=int(canary.get("maxFailedChecks", 3)),
            fail_fast_factor=float(canary.get("failFastFactor", 5)),
            max_inconclusive=int(canary.get("maxInconclusive", 5)),
            min_requests=int(canary.get("minRequests", 20)),
            on_no_data=str(canary.get("onNoData", "hold")),
            paused=bool(canary.get("paused", False)),
            progress_deadline=_optional_duration(canary.get("progressDeadline")),
            templates=str(canary.get("templates", "workload")),
            prometheus_url=(canary.get("prometheus") or {}).get("url"),
            checks=tuple(checks),
            decision=decision,
            sequential=settings,
        )


@dataclass(frozen=True)
class Reading:
    """One PromQL result for one track; `value` None means no data, `error` says why."""

    name: str
    track: str
    value: float | None
    error: str = ""

    def __post_init__(self) -> None:
        if self.value is not None and math.isnan(self.value):
            object.__setattr__(self, "value", None)
            object.__setattr__(self, "error", self.error or "NaN")


class Readings:
    """The readings of one analysis tick, looked up by (name, track)."""

    def __init__(self, readings: Iterable[Reading] = ()) -> None:
        self._by_key = {(r.name, r.track): r for r in readings}

    def get(self, name: str, track: str = CANARY) -> Reading:
        return self._by_key.get((name, track)) or Reading(name, track, None, "not queried")

    def __iter__(self) -> Any:
        return iter(self._by_key.values())

    def __repr__(self) -> str:
        return f"Readings({list(self._by_key.values())!r})"


@dataclass(frozen=True)
class Control:
    """Manual requests from the kubectl plugin (annotations) for this tick."""

    promote: str | None = None  # "step" | "full"
    abort: bool = False
    retry: bool = False
    resume: bool = False


NO_CONTROL = Control()


@dataclass(frozen=True)
class Evidence:
    """What a sequential verdict weighed: the step's counts, the statistic, the boundaries."""

    canary: Counts
    stable: Counts | None
    result: Result

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "failures": round(self.canary.failures, 3),
            "total": round(self.canary.total, 3),
        }
        if self.stable is not None:
            found["stableFailures"] = round(self.stable.failures, 3)
            found["stableTotal"] = round(self.stable.total, 3)
        statistic = self.result.statistic  # JSON has no Infinity; the reason says "inf"
        found["statistic"] = round(statistic, 4) if math.isfinite(statistic) else None
        found["rollbackAt"] = round(self.result.upper, 4)
        found["acceptAt"] = round(self.result.lower, 4)
        found["outcome"] = str(self.result.outcome)
        return found


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    track: str
    value: float | None
    threshold: float | None
    verdict: Verdict
    reason: str
    severe: bool = False  # beyond failFastFactor x its threshold
    evidence: Evidence | None = None  # set by the sequential test

    def to_dict(self) -> dict[str, Any]:
        def finite(v: float | None) -> float | None:
            # JSON has no Infinity; the reason carries "+Inf".
            return v if v is None or math.isfinite(v) else None

        found: dict[str, Any] = {
            "name": self.name,
            "track": self.track,
            "value": finite(self.value),
            "threshold": finite(self.threshold),
            "verdict": str(self.verdict),
            "reason": self.reason,
        }
        if self.evidence is not None:
            found["evidence"] = self.evidence.to_dict()
        return found


@dataclass(frozen=True)
class Ended:
    """A canary that ended with this decision: one entry of `status.history`."""

    image: str
    outcome: str  # promoted | rolledBack | superseded | aborted
    reason: str  # for humans

    def entry(self, started: datetime | None, now: datetime) -> dict[str, Any]:
        return {
            "image": self.image,
            "outcome": self.outcome,
            "reason": self.reason,
            "startedAt": format_time(started or now),
            "finishedAt": format_time(now),
        }


@dataclass(frozen=True)
class TrackState:
    """What the canary's Deployments say right now (read by the runner, judged here)."""

    canary_ready: bool = True  # every canary Deployment has the ready replicas it asks for
    canary_drained: bool = True  # no canary pod is available any more
    stable_promoted: bool = True  # the stable runs the promoted version at the serving size
    serving: Mapping[str, int] | None = None  # available replicas per component, both tracks


ALL_READY = TrackState()


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # machine-readable CamelCase, also the Event reason
    message: str  # for humans
    status: CanaryStatus  # the next canary status
    verdicts: tuple[MetricVerdict, ...] = ()
    tick: Verdict | None = None  # the analysis verdict, None when nothing was judged
    ended: Ended | None = None  # the canary this decision ends (one history entry)
    consumed: frozenset[str] = frozenset()  # control requests acted upon
    warning: bool = False  # the Event is a Warning

    @property
    def weight(self) -> int:
        return self.status.canary_weight
