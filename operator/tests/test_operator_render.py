"""Pure rendering: golden YAML per traffic provider and canary state, plus the rules
every child must follow. Regenerate goldens with CRICALGO_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from cricalgo_operator.model import Cad, pod_inputs, revision_of
from cricalgo_operator.render import render, render_weight
from cricalgo_operator.render_traffic import NGINX_CANARY, NGINX_CANARY_WEIGHT

GOLDEN = Path(__file__).parent / "golden"

BASE_SPEC: dict[str, Any] = {
    "image": "registry.local/cricalgo:1.0.0",
    "database": {"secretRef": {"name": "pay-db"}},
    "redis": {"secretRef": {"name": "pay-redis"}},
    "env": [
        {
            "name": "CRICALGO_WEBHOOK_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "wh", "key": "s"}},
        },
        {"name": "DB_POOL_SIZE", "value": "99"},  # ours wins: spec.database.poolSize
    ],
}
TRAFFIC = {
    "none": {"provider": "none"},
    "istio": {"provider": "istio", "hosts": ["pay.example.com"], "gateways": ["edge/public"]},
    "nginx": {"provider": "nginx", "hosts": ["pay.example.com"], "ingressClassName": "nginx"},
}


def make_cad(provider: str, status: dict[str, Any] | None = None, **spec: Any) -> Cad:
    body = {
        "metadata": {"name": "pay", "namespace": "payments", "uid": "uid-1", "generation": 2},
        "spec": {**BASE_SPEC, "traffic": TRAFFIC[provider], **spec},
    }
    cad = Cad.from_body(body)
    stable = pod_inputs(cad.spec)
    base_status = {
        "stableSpec": stable,
        "stableRevision": revision_of(stable),
        "stableImage": stable["image"],
        "phase": "Ready",
        "canaryWeight": 0,
    }
    return cad.with_status({**base_status, **(status or {})})


def in_canary(provider: str, weight: int, phase: str = "Progressing") -> Cad:
    """`pay` at weight `weight` with 1.1.0 as the canary of 1.0.0."""
    stable = make_cad(provider)
    moved = make_cad(provider, image="registry.local/cricalgo:1.1.0")
    return moved.with_status(
        {
            **stable.status,
            "phase": phase,
            "canaryRevision": moved.spec_revision,
            "canaryImage": "registry.local/cricalgo:1.1.0",
            "canaryWeight": weight,
        }
    )


CASES = {
    "none-stable": lambda: make_cad("none"),
    "istio-stable": lambda: make_cad("istio"),
    "nginx-stable": lambda: make_cad("nginx"),
    "none-canary-25": lambda: in_canary("none", 25),
    "istio-canary-25": lambda: in_canary("istio", 25),
    "nginx-canary-10": lambda: in_canary("nginx", 10),
    "istio-rolled-back": lambda: in_canary("istio", 0, phase="RolledBack"),
}


def by_key(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden(case: str) -> None:
    rendered = yaml.safe_dump_all(render(CASES[case]()), sort_keys=True)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("CRICALGO_UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert rendered == path.read_text(), f"{path} differs; rerun with CRICALGO_UPDATE_GOLDEN=1"


def test_children_per_provider_are_named_as_documented() -> None:
    assert sorted(by_key(render(make_cad("none")))) == [
        "Deployment/pay-app",
        "Deployment/pay-worker",
        "HorizontalPodAutoscaler/pay-app",
        "HorizontalPodAutoscaler/pay-worker",
        "PodDisruptionBudget/pay-app",
        "PodDisruptionBudget/pay-worker",
        "Service/pay",
        "Service/pay-canary",
        "Service/pay-stable",
        "ServiceAccount/pay",
    ]
    istio = set(by_key(render(in_canary("istio", 10))))
    assert {
        "VirtualService/pay",
        "DestinationRule/pay",
        "Deployment/pay-app-canary",
        "Deployment/pay-worker-canary",
        "HorizontalPodAutoscaler/pay-app-canary",
    } <= istio
    assert not any(k.startswith("Ingress/") for k in istio)
    nginx = set(by_key(render(in_canary("nginx", 10))))
    assert {"Ingress/pay", "Ingress/pay-canary"} <= nginx
    assert "Ingress/pay-canary" not in by_key(render(make_cad("nginx")))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_child_is_adopted(case: str) -> None:
    for manifest in render(CASES[case]()):
        meta = manifest["metadata"]
        assert meta["namespace"] == "payments"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "cricalgo.io/v1alpha1",
                "kind": "CricAlgoDeployment",
                "name": "pay",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/instance"] == "pay"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "cricalgo-operator"
        assert meta["labels"]["app.kubernetes.io/name"] == "cricalgo"


def test_pod_template_is_restricted_and_configured_from_the_spec() -> None:
    children = by_key(render(in_canary("istio", 25)))
    for name, track, role, image in [
        ("pay-app", "stable", "webhook", "registry.local/cricalgo:1.0.0"),
        ("pay-app-canary", "canary", "webhook", "registry.local/cricalgo:1.1.0"),
        ("pay-worker", "stable", "worker", "registry.local/cricalgo:1.0.0"),
        ("pay-worker-canary", "canary", "worker", "registry.local/cricalgo:1.1.0"),
    ]:
        template = children[f"Deployment/{name}"]["spec"]["template"]
        assert template["metadata"]["labels"]["track"] == track
        assert template["metadata"]["labels"]["version"] == image.rsplit(":", 1)[1]
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["image"] == image
        assert container["args"] == [role]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        env = {e["name"]: e for e in container["env"]}
        assert [e["name"] for e in container["env"]].count("DB_POOL_SIZE") == 1
        assert env["DB_POOL_SIZE"]["value"] == "1"
        assert env["DB_MAX_OVERFLOW"]["value"] == "1"
        assert env["DATABASE_URL"]["valueFrom"] == {
            "secretKeyRef": {"name": "pay-db", "key": "dsn"}
        }
        assert env["REDIS_URL"]["valueFrom"] == {
            "secretKeyRef": {"name": "pay-redis", "key": "url"}
        }
        assert env["CRICALGO_TRACK"]["value"] == track
        assert env["CRICALGO_ROLE"]["value"] == role
        assert env["CRICALGO_VERSION"]["value"] == image.rsplit(":", 1)[1]
        assert "CRICALGO_WEBHOOK_SECRET" in env
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = children["Deployment/pay-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9191, "protocol": "TCP"}]


def test_webhook_secret_ref_reaches_the_app_pods_only_as_a_reference() -> None:
    ref = {"secretRef": {"name": "pay-webhook", "key": "secret"}}
    children = by_key(render(make_cad("istio", webhook=ref, env=[])))
    for name in ("pay-app", "pay-worker"):
        (container,) = children[f"Deployment/{name}"]["spec"]["template"]["spec"]["containers"]
        env = [e for e in container["env"] if e["name"] == "CRICALGO_WEBHOOK_SECRET"]
        if name == "pay-worker":
            assert env == []
            continue
        assert env == [
            {
                "name": "CRICALGO_WEBHOOK_SECRET",
                "valueFrom": {"secretKeyRef": {"name": "pay-webhook", "key": "secret"}},
            }
        ]


def test_deployments_under_an_hpa_do_not_set_replicas() -> None:
    children = by_key(render(in_canary("none", 25)))
    for name in ("pay-app", "pay-app-canary", "pay-worker", "pay-worker-canary"):
        assert f"HorizontalPodAutoscaler/{name}" in children
        assert "replicas" not in children[f"Deployment/{name}"]["spec"]


def test_rolled_back_canary_is_scaled_to_zero_without_hpa() -> None:
    children = by_key(render(in_canary("istio", 0, phase="RolledBack")))
    for name in ("pay-app-canary", "pay-worker-canary"):
        assert children[f"Deployment/{name}"]["spec"]["replicas"] == 0
        assert f"HorizontalPodAutoscaler/{name}" not in children
        assert f"PodDisruptionBudget/{name}" not in children
    routes = children["VirtualService/pay"]["spec"]["http"][0]["route"]
    assert [r["weight"] for r in routes] == [100, 0]


def test_stable_track_keeps_its_template_while_the_spec_moves_on() -> None:
    children = by_key(render(in_canary("none", 10)))
    stable = children["Deployment/pay-app"]["spec"]["template"]
    canary = children["Deployment/pay-app-canary"]["spec"]["template"]
    assert stable["spec"]["containers"][0]["image"] == "registry.local/cricalgo:1.0.0"
    assert canary["spec"]["containers"][0]["image"] == "registry.local/cricalgo:1.1.0"
    assert (
        stable["metadata"]["annotations"]["cricalgo.io/revision"]
        != canary["metadata"]["annotations"]["cricalgo.io/revision"]
    )


def _hpa_bounds(children: dict[str, dict[str, Any]], name: str) -> tuple[int, int]:
    spec = children[f"HorizontalPodAutoscaler/{name}"]["spec"]
    return spec["minReplicas"], spec["maxReplicas"]


@pytest.mark.parametrize("provider", ["none", "istio", "nginx"])
def test_set_weight_moves_app_and_worker_together(provider: str) -> None:
    cad = in_canary(provider, 0)
    children = by_key(render_weight(cad, 25))
    # Workers always split by replicas: 25 % of max 10 rounds to 3 canary, 7 stable.
    assert _hpa_bounds(children, "pay-worker-canary") == (1, 3)
    assert _hpa_bounds(children, "pay-worker") == (1, 7)
    if provider == "istio":
        routes = children["VirtualService/pay"]["spec"]["http"][0]["route"]
        assert [(r["destination"]["subset"], r["weight"]) for r in routes] == [
            ("stable", 75),
            ("canary", 25),
        ]
    if provider == "nginx":
        annotations = children["Ingress/pay-canary"]["metadata"]["annotations"]
        assert annotations == {NGINX_CANARY: "true", NGINX_CANARY_WEIGHT: "25"}
    if provider == "none":
        # 25 % of the app's max 12 is exactly 3 canary / 9 stable.
        assert _hpa_bounds(children, "pay-app-canary") == (1, 3)
        assert _hpa_bounds(children, "pay-app") == (2, 9)
    else:
        assert _hpa_bounds(children, "pay-app-canary") == (3, 12)
    # The rest of the render agrees with the weight primitive.
    full = by_key(render(cad.with_status({**cad.status, "canaryWeight": 25})))
    for key, manifest in children.items():
        assert full[key] == manifest


def test_set_weight_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        render_weight(in_canary("istio", 0), 101)


def _pod_spec(children: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = children[f"Deployment/{name}"]["spec"]["template"]["spec"]
    return spec


def test_app_pods_keep_serving_while_the_mesh_drops_them() -> None:
    children = by_key(render(make_cad("istio")))
    app, worker = _pod_spec(children, "pay-app"), _pod_spec(children, "pay-worker")
    assert app["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    # The sleep is spent inside the grace period: the drain after SIGTERM keeps its 30 s.
    assert app["terminationGracePeriodSeconds"] == 35
    assert "lifecycle" not in worker["containers"][0]  # no router in front of workers
    assert worker["terminationGracePeriodSeconds"] == 60


@pytest.mark.parametrize(("seconds", "grace"), [(0, 30), (12, 42)])
def test_pre_stop_sleep_follows_the_spec(seconds: int, grace: int) -> None:
    cad = make_cad("nginx", app={"preStopSleepSeconds": seconds})
    app = _pod_spec(by_key(render(cad)), "pay-app")
    lifecycle = app["containers"][0].get("lifecycle")
    assert lifecycle == ({"preStop": {"sleep": {"seconds": seconds}}} if seconds else None)
    assert app["terminationGracePeriodSeconds"] == grace


def test_pre_stop_sleep_is_part_of_the_revision() -> None:
    # It shapes the pod template, so changing it is a canary like any template change,
    # while leaving it unset keeps the revision of CRs written before the field existed.
    base = make_cad("none")
    changed = make_cad("none", app={"preStopSleepSeconds": 10})
    assert "preStopSleepSeconds" not in base.stable_inputs["app"]
    assert changed.spec_revision != base.spec_revision


@pytest.mark.parametrize(("metrics_port", "scraped"), [(None, 8000), (8000, 8000), (9100, 9100)])
def test_app_metrics_are_served_where_the_scrape_annotation_points(
    metrics_port: int | None, scraped: int
) -> None:
    """`app.metricsPort` unset or equal to `port`: /metrics on the app port, no extra
    variable. Another port: the webhook is told to serve /metrics there, the container
    declares it, and Prometheus is pointed at it."""
    app = {"port": 8000} if metrics_port is None else {"port": 8000, "metricsPort": metrics_port}
    pod = by_key(render(make_cad("istio", app=app)))["Deployment/pay-app"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(scraped)
    if scraped == 8000:
        assert "CRICALGO_WEBHOOK_METRICS_PORT" not in env
        assert ports == {"http": 8000}
    else:
        assert env["CRICALGO_WEBHOOK_METRICS_PORT"] == str(scraped)
        assert ports == {"http": 8000, "metrics": scraped}
