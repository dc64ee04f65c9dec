"""Pure pieces of the operator: replica split, revisions, drift, readiness, logs."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import pytest
from cricalgo_operator.conditions import conditions_for, readiness_changed, set_condition
from cricalgo_operator.drift import drifted
from cricalgo_operator.logs import JsonFormatter
from cricalgo_operator.model import Cad
from cricalgo_operator.naming import image_version
from cricalgo_operator.readiness import (
    DeploymentReadiness,
    deployment_readiness,
    promotion_ready,
    serving_replicas,
    stable_readiness,
)
from cricalgo_operator.render import render
from cricalgo_operator.render_scaling import Bounds, split_replicas, track_bounds
from cricalgo_operator.status import ended_outcome
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)


def cad(image: str = "reg/cricalgo:1.0", status: dict[str, Any] | None = None, **spec: Any) -> Cad:
    body = {
        "metadata": {"name": "pay", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": {
            "image": image,
            "database": {"secretRef": {"name": "db"}},
            "redis": {"secretRef": {"name": "r"}},
            **spec,
        },
        "status": status or {},
    }
    return Cad.from_body(body)


def apply_patch(c: Cad, patch: dict[str, Any]) -> Cad:
    status = {**c.status, **patch}
    return c.with_status({k: v for k, v in status.items() if v is not None})


# --- replica split -------------------------------------------------------------------


@given(lo=st.integers(1, 50), extra=st.integers(0, 50), weight=st.integers(0, 100))
def test_split_replicas_invariants(lo: int, extra: int, weight: int) -> None:
    hi = lo + extra
    stable, canary = split_replicas(lo, hi, weight)
    assert 1 <= stable.min <= stable.max
    if weight == 0:
        assert canary is None
        assert (stable.min, stable.max) == (lo, hi)
        return
    assert canary is not None
    assert 1 <= canary.min <= canary.max <= hi
    # The canary's share of the maximum is the weight, to within one replica.
    assert abs(canary.max - hi * weight / 100) <= 1
    assert stable.max + canary.max <= hi + 1


# --- drift ---------------------------------------------------------------------------


def test_drift_ignores_extra_fields_but_sees_changed_and_missing_ones() -> None:
    desired = {"spec": {"maxReplicas": 10, "metrics": [{"type": "Resource"}]}}
    actual = {
        "spec": {"maxReplicas": 10, "minReplicas": 2, "metrics": [{"type": "Resource", "x": 1}]},
        "status": {},
    }
    assert not drifted(desired, actual)
    assert drifted(desired, {"spec": {"maxReplicas": 50, "metrics": [{"type": "Resource"}]}})
    assert drifted(desired, {"spec": {"maxReplicas": 10, "metrics": []}})
    assert drifted(desired, {})


# --- readiness and conditions --------------------------------------------------------


def deployment(name: str, track: str, desired: int, available: int, gen: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 2, "labels": {"track": track}},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": gen,
            "availableReplicas": available,
            "updatedReplicas": available,
        },
    }


def test_ready_needs_every_stable_deployment_current_and_available() -> None:
    ok = [
        deployment_readiness(deployment("pay-app", "stable", 3, 3, 2)),
        deployment_readiness(deployment("pay-worker", "stable", 2, 2, 2)),
        deployment_readiness(deployment("pay-app-canary", "canary", 1, 0, 2)),
    ]
    assert stable_readiness(ok).ready
    stale = [deployment_readiness(deployment("pay-app", "stable", 3, 3, 1))]
    assert not stable_readiness(stale).ready
    short = [deployment_readiness(deployment("pay-app", "stable", 3, 1, 2))]
    result = stable_readiness(short)
    assert not result.ready
    assert result.message == "pay-app 1/3 available"
    assert stable_readiness([]).reason == "NoDeployments"


def _readiness(name: str, track: str, desired: int, available: int) -> DeploymentReadiness:
    body = deployment(name, track, desired, available, 2)
    body["metadata"]["labels"]["app.kubernetes.io/component"] = name.split("-")[1]
    return deployment_readiness(body)


def test_promotion_prescales_stable_to_the_capacity_serving_now() -> None:
    # Provider none at 100 %: the canary carries everything, the stable shrank to one pod.
    canary = cad(
        "reg/cricalgo:1.1",
        {
            "phase": "Progressing",
            "stableImage": "reg/cricalgo:1.0",
            "stableRevision": "r1",
            "canaryImage": "reg/cricalgo:1.1",
            "canaryRevision": "r2",
            "canaryWeight": 100,
        },
    )
    before = [
        _readiness("pay-app", "stable", 1, 1),
        _readiness("pay-app-canary", "canary", 8, 8),
        _readiness("pay-worker", "stable", 1, 1),
        _readiness("pay-worker-canary", "canary", 20, 20),  # beyond max 10: bounded
    ]
    serving = serving_replicas(before)
    assert serving == {"app": 9, "worker": 21}
    promoting = apply_patch(canary, {"phase": "Promoting", "promotionReplicas": serving})
    assert promoting.status["promotionReplicas"] == {"app": 9, "worker": 21}
    hpas = {
        m["metadata"]["name"]: (m["spec"]["minReplicas"], m["spec"]["maxReplicas"])
        for m in render(promoting)
        if m["kind"] == "HorizontalPodAutoscaler"
    }
    assert hpas["pay-app"] == (9, 12)
    assert hpas["pay-worker"] == (10, 10)
    assert hpas["pay-app-canary"] == (3, 12)  # the canary keeps serving meanwhile
    # Ready at the old size is not enough: the traffic comes back at the serving size.
    small = [_readiness("pay-app", "stable", 1, 1), _readiness("pay-worker", "stable", 1, 1)]
    assert stable_readiness(small).ready
    assert not promotion_ready(promoting, small)
    big = [_readiness("pay-app", "stable", 9, 9), _readiness("pay-worker", "stable", 10, 10)]
    assert promotion_ready(promoting, big)
    done = apply_patch(promoting, {"phase": "Ready", "promotionReplicas": None})
    assert promotion_ready(done, small)  # not promoting: nothing to wait for


def test_promotion_floor_stays_within_the_hpa_bounds() -> None:
    assert track_bounds(cad().spec, "app", 100, True, False, 0)["stable"] == Bounds(3, 12)
    assert track_bounds(cad().spec, "app", 100, True, False, 50)["stable"] == Bounds(12, 12)
    assert track_bounds(cad().spec, "worker", 100, True, False, None)["stable"] == Bounds(1, 1)


def test_conditions_follow_phase_and_transition_time_only_moves_on_flips() -> None:
    ready = [deployment_readiness(deployment("pay-app", "stable", 3, 3, 2))]
    c = cad(
        status={
            "phase": "Progressing",
            "canaryRevision": "x",
            "canaryImage": "img:2",
            "canaryWeight": 10,
        }
    )
    conditions = {x["type"]: x for x in conditions_for(c.status, ready, NOW, c.generation, "img:2")}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["Progressing"]["message"] == "canary img:2 at 10%"
    assert conditions["Degraded"]["status"] == "False"
    assert conditions["Ready"]["observedGeneration"] == 3
    again = set_condition(list(conditions.values()), "Ready", True, "Available", "m", LATER, 3)
    assert next(x for x in again if x["type"] == "Ready")["lastTransitionTime"] == (
        "2026-11-27T12:00:00Z"
    )
    flipped = set_condition(again, "Ready", False, "Unavailable", "m", LATER, 3)
    assert next(x for x in flipped if x["type"] == "Ready")["lastTransitionTime"] == (
        "2026-11-27T12:05:00Z"
    )
    rolled = cad(status={"phase": "RolledBack", "failedImage": "img:2"})
    degraded = {x["type"]: x for x in conditions_for(rolled.status, ready, NOW, 3, "img:2")}[
        "Degraded"
    ]
    assert degraded["status"] == "True"
    assert "img:2" in degraded["message"]


# --- naming, logs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("registry.local/cricalgo:1.2.3", "1.2.3"),
        ("registry.local:5000/team/cricalgo:v2", "v2"),
        ("cricalgo", "latest"),
        ("cricalgo@sha256:abcdef", "sha256-abcdef"),
    ],
)
def test_version_label_is_the_image_tag(image: str, version: str) -> None:
    assert image_version(image) == version


def test_json_log_lines_carry_the_object() -> None:
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.k8s_ref = {"kind": "CricAlgoDeployment", "namespace": "ns", "name": "pay"}
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello x"
    assert line["level"] == "INFO"
    assert line["object"] == {"kind": "CricAlgoDeployment", "namespace": "ns", "name": "pay"}


# --- RBAC ----------------------------------------------------------------------------


def test_namespaced_role_grants_exactly_the_cluster_role_rules() -> None:
    import yaml
    from cricalgo_operator.permissions import rbac_manifests

    cluster_role, role = rbac_manifests()
    assert cluster_role["kind"] == "ClusterRole"
    assert role["kind"] == "Role"
    assert role["rules"] == cluster_role["rules"]
    assert yaml.safe_dump(role["rules"]).count("'*'") == 0


def test_readiness_watcher_only_acts_when_the_ready_condition_is_stale() -> None:
    deployments = [deployment_readiness(deployment("pay-app", "stable", 3, 1, 2))]
    fresh = cad(status={"phase": "Ready"})
    assert readiness_changed(fresh.status, deployments)
    conditions = conditions_for(fresh.status, deployments, NOW, 3, "img")
    current = cad(status={"phase": "Ready", "conditions": conditions})
    assert not readiness_changed(current.status, deployments)
    recovered = [deployment_readiness(deployment("pay-app", "stable", 3, 3, 2))]
    assert readiness_changed(current.status, recovered)


def test_pure_modules_never_import_the_kubernetes_client() -> None:
    """Rendering, conditions, drift, child identity, readiness and the canary engine
    import nothing that talks to the API server (so they stay testable without one)."""
    import subprocess
    import sys

    pure = [
        "render",
        "conditions",
        "drift",
        "children",
        "events",
        "readiness",
        "canary.engine",
        "canary.model",
        "canary.state",
        "canary.revisions",
    ]
    code = (
        "import sys\n"
        + "".join(f"import cricalgo_operator.{m}\n" for m in pure)
        + "print(sorted(m for m in sys.modules if m.startswith(('cricalgo_operator.kube',"
        " 'cricalgo_operator.connection', 'cricalgo_operator.status', 'httpx', 'kopf',"
        " 'kubernetes', 'lightkube'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_rollout_outcome_is_counted_once_per_new_history_entry() -> None:
    old = [{"image": "a", "outcome": "promoted"}]
    assert ended_outcome(old, None) is None
    assert ended_outcome(old, old) is None  # a rewrite of the same history
    assert ended_outcome(old, [*old, {"image": "b", "outcome": "rolledBack"}]) == "rolledBack"
    assert ended_outcome([], [{"image": "b", "outcome": "aborted"}]) == "aborted"


def test_forget_removes_every_series_of_a_deleted_cr() -> None:
    from cricalgo_operator import metrics
    from prometheus_client import generate_latest

    metrics.record_state("ns-forget", "gone", "Progressing", 25)
    metrics.analysis_verdicts.labels("ns-forget", "gone", "errorRate", "pass").inc()
    metrics.rollbacks.labels("ns-forget", "gone", "CheckFailed").inc()
    metrics.record_outcome("ns-forget", "gone", "superseded")
    metrics.analysis_errors.labels("ns-forget", "gone").inc()
    metrics.record_state("ns-forget", "kept", "Ready", 0)
    metrics.forget("ns-forget", "gone")
    text = generate_latest().decode()
    assert 'name="gone"' not in text
    assert 'name="kept",namespace="ns-forget"' in text


def test_a_reported_failure_stays_until_a_reconcile_succeeds() -> None:
    from cricalgo_operator.failures import OWNERSHIP_CONFLICT, failure_conditions

    failed = failure_conditions([], OWNERSHIP_CONFLICT, "Service/pay-stable exists", NOW, 1)
    broken = cad(status={"phase": "Initializing", "conditions": failed})

    def degraded(keep: bool) -> dict[str, Any]:
        found = conditions_for(broken.status, [], NOW, 1, "img", keep_failure=keep)
        return next(c for c in found if c["type"] == "Degraded")

    kept = degraded(True)  # the readiness watcher
    assert (kept["status"], kept["reason"]) == ("True", OWNERSHIP_CONFLICT)
    cleared = degraded(False)  # a reconcile that got through
    assert (cleared["status"], cleared["reason"]) == ("False", "AsExpected")
