"""One analysis tick for one CR: read it, query Prometheus, decide, carry the decision out.

The engine returns the complete next status; `persist` writes it with one status patch
(conditional on the CR's resourceVersion: a tick racing the reconciler loses with a 409
and the next tick decides again from a fresh read), then applies only the children whose
render changed and prunes the ones that went. The reconciler persists the engine's
decisions about a new pod template the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Histogram

from cricalgo_operator import metrics
from cricalgo_operator.apply import apply
from cricalgo_operator.canary.controls import (
    ANNOTATION_OF,
    consumed_patch,
    control_from_annotations,
    patch_cad,
)
from cricalgo_operator.canary.engine import (
    AWAITING_CANARY_DRAIN,
    AWAITING_CANARY_PODS,
    AWAITING_STABLE,
    IMMEDIATE_ROLLBACKS,
    decide,
)
from cricalgo_operator.canary.migration_gate import AWAITING_MIGRATION
from cricalgo_operator.canary.model import (
    ALL_READY,
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Decision,
    Phase,
    Reading,
    Readings,
    TrackState,
    Verdict,
)
from cricalgo_operator.canary.prometheus import PrometheusClient
from cricalgo_operator.canary.prometheus_auth import PrometheusEndpoint, prometheus_endpoint
from cricalgo_operator.canary.prometheus_policy import PrometheusPolicy
from cricalgo_operator.canary.readings import AnalysisTarget, collect_readings, planned_queries
from cricalgo_operator.canary.scrape_window import check_window, window_unchecked
from cricalgo_operator.canary.state import OWNED_FIELDS
from cricalgo_operator.children import by_child_id, leftovers, widened_children
from cricalgo_operator.events import Transition
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.migration_jobs import observe_migration
from cricalgo_operator.model import Cad, Manifest, pod_inputs
from cricalgo_operator.naming import API_VERSION, KIND, children_selector, image_version
from cricalgo_operator.readiness import deployment_readiness, promotion_ready, serving_replicas
from cricalgo_operator.render import render
from cricalgo_operator.stable_env import externalize
from cricalgo_operator.status import emit_event, write_status

log = logging.getLogger(__name__)

analysis_duration = Histogram(
    "cricalgo_operator_analysis_duration_seconds",
    "Time from the start of an analysis tick to its decision (queries included).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def config_of(cad: Cad) -> CanaryConfig:
    """The engine's configuration. The pod inputs the stable takes over carry references
    in place of literal env values (stable_env.py), so the status a decision writes, and
    the render of it, are the same before and after the write."""
    return CanaryConfig.from_spec(
        cad.spec,
        revision=cad.spec_revision,
        pod_inputs=externalize(cad, pod_inputs(cad.spec)).snapshot,
        generation=cad.generation,
    )


def needs_readings(config: CanaryConfig, status: CanaryStatus) -> bool:
    """Only a running canary past its first step is judged: don't query otherwise."""
    return (
        status.phase in (Phase.PROGRESSING, Phase.PAUSED)
        and status.current_step >= 0
        and status.canary_revision == config.revision
    )


# Holds while the Deployments catch up: pending requests wait for them, and the next tick
# comes within a second.
_WAITING = (AWAITING_CANARY_PODS, AWAITING_STABLE, AWAITING_CANARY_DRAIN)
TRANSIENT_RETRY_SECONDS = 1.0

# When the canary's weight goes down and its pods go in the same decision (a rollback, the
# end of a promotion), the traffic objects are applied first and the rest this much later,
# so routers have moved the traffic before the pods leave the endpoints (Argo Rollouts
# waits 30 s by default, abortScaleDownDelaySeconds; a mesh reprograms within seconds).
TRAFFIC_SETTLE_SECONDS = 3.0
TRAFFIC_KINDS = frozenset({"VirtualService", "Ingress"})


def traffic_first(
    weight_before: int, weight_after: int, changed: list[Manifest]
) -> tuple[list[Manifest], list[Manifest]]:
    """(traffic objects to apply first, the rest) when the canary's weight goes down and
    other children change with it; else ([], changed)."""
    traffic = [m for m in changed if m["kind"] in TRAFFIC_KINDS]
    rest = [m for m in changed if m["kind"] not in TRAFFIC_KINDS]
    if weight_after >= weight_before or not traffic or not rest:
        return [], changed
    return traffic, rest


def is_transient(decision: Decision) -> bool:
    """Whether the next tick should come within a second: the canary waits for its
    Deployments (pods to start, the stable to take over, the canary to drain)."""
    status = decision.status
    return (
        decision.reason in _WAITING
        or status.phase in (Phase.PROMOTING, Phase.ROLLING_BACK)
        or (status.phase == Phase.PROGRESSING and status.current_step < 0)
    )


def ignored_requests(annotations: Mapping[str, str], decision: Decision) -> frozenset[str]:
    """Pending requests the decision did not act on and that do not apply now.

    They are dropped (with a warning Event) rather than left to fire later: a stale
    `promote: full` must not promote the next canary the moment it starts.
    """
    if decision.reason == AWAITING_CANARY_PODS or decision.action == Action.CREATE:
        return frozenset()
    pending = {request for request, key in ANNOTATION_OF.items() if key in annotations}
    return frozenset(pending - decision.consumed)


def transition_of(before: CanaryStatus, decision: Decision) -> Transition | None:
    """The Event a decision is announced with (None: nothing new happened)."""
    action, reason, message = decision.action, decision.reason, decision.message
    if action == Action.PROMOTE:
        return Transition("Promoting", f"promoting {before.canary_image}: {message}")
    if action == Action.ROLLBACK and reason != "Aborted":
        return Transition("RolledBack", f"rolled back {before.canary_image}: {message}", "Warning")
    if action == Action.HOLD:
        if reason == "CheckFailed":
            return Transition("AnalysisFailed", message, "Warning")
        if reason in (AWAITING_CANARY_PODS, AWAITING_MIGRATION) and _holding(before) != reason:
            # Announced once: posted with the write that puts the hold in the conditions.
            return Transition(reason, message)
        return None
    if action == Action.IDLE:
        return None
    warning = decision.warning or reason == "NoData"
    return Transition(reason, message, "Warning" if warning else "Normal")


def _holding(status: CanaryStatus) -> str | None:
    """The reason of the Progressing condition: why the canary holds, if it does."""
    found = next((c for c in status.conditions if c.get("type") == "Progressing"), None)
    return None if found is None else found.get("reason")


def with_owned(status: Mapping[str, Any], canary: CanaryStatus) -> dict[str, Any]:
    """A CR status with the engine's fields replaced by `canary`'s."""
    kept = {k: v for k, v in status.items() if k not in OWNED_FIELDS}
    return kept | {k: v for k, v in canary.to_dict().items() if v is not None}


async def persist(
    api: KubeApi,
    cad: Cad,
    decision: Decision | None,
    now: datetime,
    *,
    full: bool = False,
) -> tuple[Cad, list[Manifest]]:
    """Write the decision's status in one patch, announce it, then apply the children
    whose render changed (all of them with `full`) and prune the ones that went.

    The status goes first, with the children list widened in the same patch: if we stop
    right after, the next run renders the same children and leaks none.
    """
    before = CanaryStatus.from_dict(cad.status)
    after = cad if decision is None else cad.with_status(with_owned(cad.status, decision.status))
    manifests = render(after)
    patch = {} if decision is None else decision.status.patch_from(cad.status)
    widened = widened_children(after, manifests)
    if widened is not None:
        patch["children"] = widened
    transition = None if decision is None else transition_of(before, decision)
    old = {} if full else by_child_id(render(cad))
    if patch:
        cad = await write_status(api, cad, patch, transition, now)
        if "stableSpec" in patch:
            # The write moved the snapshot's literal env values to a Secret (stable_env.py):
            # the stable renders from the snapshot as written.
            manifests = render(cad)
    elif transition is not None:
        await emit_event(api, cad, transition, now)
    changed = [m for m in manifests if full or old.get(f"{m['kind']}/{m['metadata']['name']}") != m]
    applied: list[Manifest] = []
    first, changed = traffic_first(before.canary_weight, cad.canary_weight, changed)
    if first:
        # Traffic leaves the canary before its pods do: a router that saw the pods go
        # before the new weights would send the canary's share to no endpoint (503).
        cad, applied = await apply(api, cad, manifests, first)
        await asyncio.sleep(TRAFFIC_SETTLE_SECONDS)
    if changed or leftovers(cad.status.get("children") or [], manifests):
        cad, rest = await apply(api, cad, manifests, changed)
        applied += rest
    if decision is not None and decision.action == Action.ROLLBACK:
        metrics.rollbacks.labels(cad.namespace, cad.name, decision.reason).inc()
    metrics.record_state(cad.namespace, cad.name, cad.status.get("phase"), cad.canary_weight)
    return cad, applied


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


def needs_tracks(status: CanaryStatus, control: Control) -> bool:
    """Only decisions that wait for the Deployments read them."""
    if status.phase in (Phase.PROGRESSING, Phase.PAUSED):
        return status.current_step < 0
    if status.phase == Phase.ROLLED_BACK:
        return control.retry
    return status.phase in (Phase.PROMOTING, Phase.ROLLING_BACK)


async def read_tracks(api: KubeApi, cad: Cad) -> TrackState:
    """What the CR's Deployments say, from their status (the API server's, not a cache).

    A canary scaled to zero after a rollback is not ready, whatever its Deployments say.
    """
    selector = children_selector(cad.name)
    found = await api.list("apps/v1", "Deployment", cad.namespace, label_selector=selector)
    readiness = [deployment_readiness(d) for d in found]
    canary = [r for r in readiness if r.track == "canary"]
    return TrackState(
        canary_ready=(
            cad.canary_active
            and not cad.canary_scaled_down
            and bool(canary)
            and all(r.ready for r in canary)
        ),
        canary_drained=all(r.available == 0 for r in canary),
        stable_promoted=promotion_ready(cad, readiness),
        serving=serving_replicas(readiness),
    )


async def tick(
    api: KubeApi,
    namespace: str,
    name: str,
    now: datetime,
    default_url: PrometheusPolicy | str | None = None,
    previous: Decision | None = None,
    fail_fast_only: bool = False,
    resync: bool = False,
) -> TickResult | None:
    """Run one analysis tick for the CR; None if it is gone.

    `previous` is the last tick's decision, so that a hold repeated every second is
    logged once (its Event is posted with the status write that records it). With
    `fail_fast_only` (the probe between ticks) nothing is written unless the decision is
    a fail-fast rollback: a probe never advances, counts no failed check and leaves
    control requests to the tick. The sequential test's
    rollback is one too: its error rate holds however often it is looked at. With
    `resync` (after a tick that failed half-way) every child is applied, not only those
    that change."""
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
            # The engine keeps the condition just written (it owns the others only).
            status = CanaryStatus.from_dict(cad.status)
        readings = await read_readings(cad, config, status, endpoint, now)
    if fail_fast_only:
        decision = decide(config, status, readings, now)
        if decision.reason not in IMMEDIATE_ROLLBACKS:
            return TickResult(decision, config.analysis_interval)
    else:
        control = control_from_annotations(cad.annotations)
        tracks = await read_tracks(api, cad) if needs_tracks(status, control) else ALL_READY
        migration = await observe_migration(api, cad)
        decision = decide(
            config, status, readings, now, control, tracks=tracks, migration=migration
        )
        if decision.action == Action.PROMOTE and tracks.serving is None:
            # The stable is scaled to the capacity serving when the promotion begins.
            tracks = await read_tracks(api, cad)
            decision = decide(
                config, status, readings, now, control, tracks=tracks, migration=migration
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
    if decision.reason in (AWAITING_CANARY_PODS, AWAITING_MIGRATION) and (
        previous is None or previous.reason != decision.reason
    ):
        log.info("canary %s/%s: %s", namespace, name, decision.message)
    cad, _ = await persist(api, cad, decision, now, full=resync)
    # Failing and inconclusive ticks are logged with their reasons (why a canary holds).
    if decision.tick in (Verdict.FAIL, Verdict.NODATA) or decision.action in (
        Action.ROLLBACK,
        Action.PROMOTE,
    ):
        log.info(
            "canary %s/%s: %s (%s) %s",
            namespace,
            name,
            decision.action,
            decision.reason,
            decision.message,
        )
    interval = TRANSIENT_RETRY_SECONDS if is_transient(decision) else config.analysis_interval
    return TickResult(decision, interval)
