"""One analysis tick for one CR: read it, query Prometheus, decide, carry the decision out.

The side effects use the operator's primitives (rollout.set_weight / promote / rollback,
status.write_status) so the canary state is written exactly as the reconciler expects it.
Every status write is conditional on the CR's resourceVersion: a tick racing the
reconciler loses with a 409 and the next tick decides again from a fresh read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Histogram

from cricalgo_operator import metrics, rollout
from cricalgo_operator.canary.controls import (
    ANNOTATION_OF,
    consumed_patch,
    control_from_annotations,
    patch_cad,
)
from cricalgo_operator.canary.engine import AWAITING_CANARY_PODS, IMMEDIATE_ROLLBACKS, decide
from cricalgo_operator.canary.model import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Decision,
    Phase,
    Reading,
    Readings,
    Verdict,
    format_time,
)
from cricalgo_operator.canary.prometheus import PrometheusClient
from cricalgo_operator.canary.prometheus_auth import PrometheusEndpoint, prometheus_endpoint
from cricalgo_operator.canary.prometheus_policy import PrometheusPolicy
from cricalgo_operator.canary.readings import AnalysisTarget, collect_readings, planned_queries
from cricalgo_operator.canary.scrape_window import check_window, window_unchecked
from cricalgo_operator.children import apply_children
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.model import Cad
from cricalgo_operator.naming import API_VERSION, KIND, children_selector, image_version
from cricalgo_operator.readiness import deployment_readiness
from cricalgo_operator.revisions import rollback_patch
from cricalgo_operator.status import Transition, emit_event, write_status

log = logging.getLogger(__name__)

analysis_duration = Histogram(
    "cricalgo_operator_analysis_duration_seconds",
    "Time from the start of an analysis tick to its decision (queries included).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Fields the rollout primitives write themselves (with their history and Events).
_PRIMITIVE_FIELDS = {
    Action.PROMOTE: {"phase", "stableImage", "stableRevision"},
    Action.ROLLBACK: {"phase", "canaryWeight", "failedImage"},
}


def config_of(cad: Cad) -> CanaryConfig:
    return CanaryConfig.from_spec(cad.spec, revision=cad.spec_revision)


def needs_readings(config: CanaryConfig, status: CanaryStatus) -> bool:
    """Only a running canary past its first step is judged: don't query otherwise."""
    return (
        status.phase in (Phase.PROGRESSING, Phase.PAUSED)
        and status.current_step >= 0
        and status.canary_revision == config.revision
    )


# Decisions taken while the reconciler or the canary's pods catch up: pending requests
# wait for them, and the next tick comes within a second.
_TRANSIENT = ("AwaitingReconcile", "AwaitingCanary", AWAITING_CANARY_PODS)
TRANSIENT_RETRY_SECONDS = 1.0


def ignored_requests(annotations: Mapping[str, str], decision: Decision) -> frozenset[str]:
    """Pending requests the decision did not act on and that do not apply now.

    They are dropped (with a warning Event) rather than left to fire later: a stale
    `promote: full` must not promote the next canary the moment it starts.
    """
    if decision.reason in _TRANSIENT:
        return frozenset()
    pending = {request for request, key in ANNOTATION_OF.items() if key in annotations}
    return frozenset(pending - decision.consumed)


def last_analysis(decision: Decision, now: datetime) -> dict[str, Any]:
    return {
        "time": format_time(now),
        "verdict": str(decision.tick),
        "metrics": [v.to_dict() for v in decision.verdicts],
    }


def status_patch(before: CanaryStatus, decision: Decision, now: datetime) -> dict[str, Any]:
    """The merge patch the tick writes itself (primitives write the rest)."""
    old, new = before.to_patch(), decision.status.to_patch()
    skip = _PRIMITIVE_FIELDS.get(decision.action, set()) | {"canaryWeight"}
    patch = {k: v for k, v in new.items() if old.get(k) != v and k not in skip}
    if decision.tick is not None:
        patch["lastAnalysis"] = last_analysis(decision, now)
    return patch


@dataclass
class TickResult:
    decision: Decision
    interval: float  # seconds until the next tick


# A query's deadline follows the interval, within bounds: a busy Prometheus answering a
# 1 s-interval analysis in 1.5 s is slow, not down, and "no data" ticks pause the canary.
QUERY_TIMEOUT_BOUNDS = (5.0, 10.0)


def query_timeout(interval: float) -> float:
    """Seconds one Prometheus query may take in an analysis at `interval`."""
    low, high = QUERY_TIMEOUT_BOUNDS
    return min(high, max(low, interval))


async def read_readings(
    cad: Cad,
    config: CanaryConfig,
    status: CanaryStatus,
    endpoint: PrometheusEndpoint,
    now: datetime | None = None,
) -> Readings:
    url = endpoint.url
    started = status.step_started_at
    step_seconds = (now - started).total_seconds() if now and started else 0.0
    target = AnalysisTarget(
        cad.namespace,
        cad.name,
        canary_version=image_version(status.canary_image or cad.spec["image"]),
        stable_version=image_version(status.stable_image or cad.spec["image"]),
        step_seconds=step_seconds,
    )
    if not url:
        reason = endpoint.refused or "no Prometheus URL (spec.canary.prometheus.url)"
        plan = planned_queries(config, target)
        return Readings(Reading(name, track, None, reason) for name, track, _ in plan)
    timeout = query_timeout(config.analysis_interval)
    async with PrometheusClient(url, timeout=timeout, credentials=endpoint.credentials) as client:
        readings = await collect_readings(client, config, target)
    if any(r.error.startswith("Prometheus") for r in readings):
        metrics.analysis_errors.labels(cad.namespace, cad.name).inc()
    return readings


def needs_canary_readiness(status: CanaryStatus, control: Control) -> bool:
    """Only a decision that may first send the canary traffic depends on its pods."""
    if status.phase in (Phase.PROGRESSING, Phase.PAUSED):
        return status.current_step < 0
    return status.phase == Phase.ROLLED_BACK and control.retry


async def canary_ready(api: KubeApi, cad: Cad) -> bool:
    """Whether every canary Deployment has all the ready replicas it asks for.

    Read from the Deployments' status (the API server's, not a cache). A canary scaled to
    zero after a rollback is not ready, whatever its Deployments say.
    """
    if not cad.canary_active or cad.canary_scaled_down:
        return False
    selector = children_selector(cad.name, "canary")
    found = await api.list("apps/v1", "Deployment", cad.namespace, label_selector=selector)
    readiness = [deployment_readiness(d) for d in found]
    return bool(readiness) and all(r.ready for r in readiness)


async def tick(
    api: KubeApi,
    namespace: str,
    name: str,
    now: datetime,
    default_url: PrometheusPolicy | str | None = None,
    previous: Decision | None = None,
    fail_fast_only: bool = False,
) -> TickResult | None:
    """Run one analysis tick for the CR; None if it is gone.

    `previous` is the last tick's decision, so that a hold repeated every second is
    announced (Event) once. With `fail_fast_only` (the probe between ticks) nothing is
    written unless the decision is a fail-fast rollback: a probe never advances, counts
    no failed check and leaves control requests to the tick. The sequential test's
    rollback is one too: its error rate holds however often it is looked at."""
    started = time.perf_counter()
    body = await api.get(API_VERSION, KIND, namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    cad = Cad.from_body(body)
    config = config_of(cad)
    status = CanaryStatus.from_dict(cad.status)
    readings = Readings()
    if needs_readings(config, status):
        policy = PrometheusPolicy.of(default_url)
        endpoint = await prometheus_endpoint(api, namespace, cad.spec, policy)
        if endpoint.url and window_unchecked(cad):
            timeout = query_timeout(config.analysis_interval)
            cad = await check_window(api, cad, endpoint, config.analysis_interval, now, timeout)
        readings = await read_readings(cad, config, status, endpoint, now)
    if fail_fast_only:
        decision = decide(config, status, readings, now)
        if decision.reason not in IMMEDIATE_ROLLBACKS:
            return TickResult(decision, config.analysis_interval)
    else:
        control = control_from_annotations(cad.annotations)
        needed = needs_canary_readiness(status, control)
        decision = decide(
            config, status, readings, now, control, await canary_ready(api, cad) if needed else True
        )
    analysis_duration.observe(time.perf_counter() - started)
    for verdict in decision.verdicts:
        metrics.analysis_verdicts.labels(namespace, name, verdict.name, str(verdict.verdict)).inc()
    ignored = frozenset() if fail_fast_only else ignored_requests(cad.annotations, decision)
    if decision.consumed or ignored:
        # At most once: a request is deleted before it is carried out, so a crash in
        # between loses it (the user repeats it) instead of applying it twice.
        patch = consumed_patch(decision.consumed | ignored)
        cad = Cad.from_body(await patch_cad(api, namespace, name, patch))
    if ignored:
        phase = status.phase or "Initializing"
        message = f"{', '.join(sorted(ignored))}: nothing to do while {phase} ({decision.reason})"
        await emit_event(api, cad, Transition("RequestIgnored", message, "Warning"), now)
    if decision.reason == AWAITING_CANARY_PODS and (
        previous is None or previous.reason != decision.reason
    ):
        log.info("canary %s/%s: %s", namespace, name, decision.message)
        await emit_event(api, cad, Transition(decision.reason, decision.message), now)
    await carry_out(api, cad, status, decision, now)
    # The reconciler is about to create or replace the canary: look again soon.
    interval = TRANSIENT_RETRY_SECONDS if decision.reason in _TRANSIENT else None
    return TickResult(decision, interval or config.analysis_interval)


async def carry_out(
    api: KubeApi, cad: Cad, before: CanaryStatus, decision: Decision, now: datetime
) -> Cad:
    """Write the decision's status and perform its action."""
    action = decision.action
    patch = status_patch(before, decision, now)
    transition: Transition | None = None
    if action in (Action.START, Action.ADVANCE, Action.PAUSE, Action.RESUME):
        if decision.reason == "NoData":
            transition = Transition(decision.reason, decision.message, "Warning")
        else:
            transition = Transition(decision.reason, decision.message)
    elif action == Action.HOLD and decision.reason == "CheckFailed":
        transition = Transition("AnalysisFailed", decision.message, "Warning")
    if action == Action.PROMOTE and before.phase == Phase.PROMOTING:
        return cad  # the reconciler finishes the promotion once stable is available
    if patch or transition:
        cad = await write_status(api, cad, patch, transition, now)
    if action in (Action.START, Action.ADVANCE) or _weight_lags(cad, decision):
        # Also repairs a weight a previous tick decided but could not apply (a lost race).
        cad = await rollout.set_weight(api, cad, decision.weight, now=now)
    elif action == Action.PROMOTE:
        cad = await rollout.promote(api, cad, reason=decision.message, now=now)
    elif action == Action.ROLLBACK and before.phase != Phase.ROLLED_BACK:
        metrics.rollbacks.labels(cad.namespace, cad.name, decision.reason).inc()
        if decision.ended is not None and decision.ended.outcome != "rolledBack":
            cad = await _abort(api, cad, decision, now)
        else:
            cad = await rollout.rollback(api, cad, reason=decision.message, now=now)
    metrics.record_state(cad.namespace, cad.name, cad.status.get("phase"), cad.canary_weight)
    # Failing and inconclusive ticks are logged with their reasons (why a canary holds).
    if decision.tick in (Verdict.FAIL, Verdict.NODATA) or action in (
        Action.ROLLBACK,
        Action.PROMOTE,
    ):
        log.info(
            "canary %s/%s: %s (%s) %s",
            cad.namespace,
            cad.name,
            action,
            decision.reason,
            decision.message,
        )
    return cad


def _weight_lags(cad: Cad, decision: Decision) -> bool:
    return (
        decision.action in (Action.HOLD, Action.PAUSE, Action.RESUME)
        and decision.status.phase in (Phase.PROGRESSING, Phase.PAUSED)
        and decision.status.current_step >= 0
        and cad.canary_active
        and cad.canary_weight != decision.weight
    )


async def _abort(api: KubeApi, cad: Cad, decision: Decision, now: datetime) -> Cad:
    """rollout.rollback, but recorded in the history as `aborted` (a user's decision)."""
    assert decision.ended is not None
    patch = rollback_patch(cad, decision.message, now)
    history = list(patch["history"])
    history[-1] = {**history[-1], "outcome": decision.ended.outcome}
    patch["history"] = history
    transition = Transition(decision.reason, decision.message, "Warning")
    cad = await write_status(api, cad, patch, transition, now)
    cad, _ = await apply_children(api, cad)
    return cad
