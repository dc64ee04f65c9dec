"""The mesh's pure rendering: endpoints from ready pods, exact per-endpoint weights, and
the nginx config for VirtualServices and canary Ingresses."""

from __future__ import annotations

from typing import Any

import pytest
from cricalgo_localstack.mesh_config import (
    Backend,
    MeshObjects,
    RetryPolicy,
    endpoint_weights,
    render_mesh_config,
    render_retries,
    retry_policy,
    service_endpoints,
)

NO_ENDPOINTS = "127.0.0.1:9"


def pod(name: str, ip: str, labels: dict[str, str], ready: bool = True, **meta: Any) -> Any:
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": labels, **meta},
        "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def svc(name: str, selector: dict[str, str]) -> Any:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": "http"}]},
    }


PODS = [
    pod("s1", "127.5.0.2", {"app": "web", "track": "stable"}),
    pod("s2", "127.5.0.3", {"app": "web", "track": "stable"}),
    pod("c1", "127.5.0.4", {"app": "web", "track": "canary"}),
    pod("c2", "127.5.0.5", {"app": "web", "track": "canary"}, ready=False),
    pod("c3", "127.5.0.6", {"app": "web", "track": "canary"}, deletionTimestamp="2026-01-01"),
]


def test_endpoints_are_ready_non_terminating_pods_with_the_named_target_port() -> None:
    service = svc("web", {"app": "web"})
    assert service_endpoints(service, PODS, 80, None, {"track": "canary"}) == ("127.5.0.4:8000",)
    assert service_endpoints(service, PODS, None) == (
        "127.5.0.2:8000",
        "127.5.0.3:8000",
        "127.5.0.4:8000",
    )
    assert service_endpoints(service, PODS, 81) == ()


def test_endpoint_weights_give_each_backend_exactly_its_share() -> None:
    stable = Backend("stable", 75, ("a:1", "b:1"))
    canary = Backend("canary", 25, ("c:1",))
    weights = dict(endpoint_weights([stable, canary], NO_ENDPOINTS))
    assert weights == {"a:1": 3, "b:1": 3, "c:1": 2}
    total = sum(weights.values())
    assert (weights["a:1"] + weights["b:1"]) / total == 0.75


def test_weight_zero_is_left_out_and_an_empty_backend_gets_503s() -> None:
    stable = Backend("stable", 100, ("a:1", "b:1", "c:1"))
    assert endpoint_weights([stable, Backend("canary", 0, ("d:1",))], NO_ENDPOINTS) == [
        ("a:1", 1),
        ("b:1", 1),
        ("c:1", 1),
    ]
    half = endpoint_weights([Backend("s", 50, ("a:1",)), Backend("c", 50, ())], NO_ENDPOINTS)
    assert dict(half) == {"a:1": 1, NO_ENDPOINTS: 1}


def _virtual_service(stable: int, canary: int) -> Any:
    return {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "hosts": ["web.example.com"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "web", "subset": "stable"}, "weight": stable},
                        {
                            "destination": {
                                "host": "web.shop.svc.cluster.local",
                                "subset": "canary",
                            },
                            "weight": canary,
                        },
                    ]
                }
            ],
        },
    }


DESTINATION_RULE = {
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "host": "web",
        "subsets": [
            {"name": "stable", "labels": {"track": "stable"}},
            {"name": "canary", "labels": {"track": "canary"}},
        ],
    },
}


def test_virtual_service_with_subsets_renders_a_weighted_upstream_per_host() -> None:
    objects = MeshObjects(
        virtual_services=[_virtual_service(90, 10)],
        destination_rules=[DESTINATION_RULE],
        services=[svc("web", {"app": "web"})],
        pods=PODS,
    )
    text = render_mesh_config(objects, "127.0.0.1:8080", NO_ENDPOINTS)
    assert "server_name web.example.com;" in text
    # 90 over two stable pods, 10 on one canary pod: 45 : 45 : 10 -> 9 : 9 : 2.
    assert "server 127.5.0.2:8000 weight=9 max_fails=0;" in text
    assert "server 127.5.0.3:8000 weight=9 max_fails=0;" in text
    assert "server 127.5.0.4:8000 weight=2 max_fails=0;" in text
    assert "127.5.0.5" not in text
    assert "127.5.0.6" not in text
    assert "listen 127.0.0.1:8080 default_server;" in text
    # Rendering is a function of its input: same objects, same text (no needless reloads).
    assert render_mesh_config(objects, "127.0.0.1:8080", NO_ENDPOINTS) == text


def _ingress(name: str, backend: str, annotations: dict[str, str]) -> Any:
    return {
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
        "spec": {
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": backend, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


def test_canary_ingress_takes_its_weight_from_the_primary() -> None:
    canary = {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "20",
    }
    objects = MeshObjects(
        ingresses=[
            _ingress("shop", "web-stable", {}),
            _ingress("shop-canary", "web-canary", canary),
        ],
        services=[
            svc("web-stable", {"app": "web", "track": "stable"}),
            svc("web-canary", {"app": "web", "track": "canary"}),
        ],
        pods=PODS,
    )
    text = render_mesh_config(objects, "127.0.0.1:8080", NO_ENDPOINTS)
    assert "server_name shop.example.com;" in text
    # 80 over two pods, 20 on one: 40 : 40 : 20 -> 2 : 2 : 1.
    assert "server 127.5.0.2:8000 weight=2 max_fails=0;" in text
    assert "server 127.5.0.4:8000 weight=1 max_fails=0;" in text


def test_a_canary_without_ready_pods_gets_its_share_answered_503() -> None:
    objects = MeshObjects(
        virtual_services=[_virtual_service(50, 50)],
        destination_rules=[DESTINATION_RULE],
        services=[svc("web", {"app": "web"})],
        pods=[p for p in PODS if p["metadata"]["labels"]["track"] == "stable"],
    )
    text = render_mesh_config(objects, "127.0.0.1:8080", NO_ENDPOINTS)
    assert f"server {NO_ENDPOINTS} weight=2 max_fails=0;" in text
    assert "no healthy upstream" in text


def test_routes_retry_as_istio_and_ingress_nginx_do_by_default() -> None:
    objects = MeshObjects(
        virtual_services=[_virtual_service(90, 10)],
        destination_rules=[DESTINATION_RULE],
        ingresses=[_ingress("shop", "web-stable", {})],
        services=[svc("web", {"app": "web"}), svc("web-stable", {"app": "web"})],
        pods=PODS,
    )
    text = render_mesh_config(objects, "127.0.0.1:8080", NO_ENDPOINTS)
    web, shop = text.split("server_name web.example.com;")[1].split("server_name shop.")
    # Istio: a refused or reset connection is tried on another pod, POSTs included, 3 tries.
    assert "proxy_next_upstream error non_idempotent;" in web
    assert "proxy_next_upstream_tries 3;" in web
    # ingress-nginx: error and timeout, never a POST that was sent.
    assert "proxy_next_upstream error timeout;" in shop
    assert "non_idempotent" not in shop


def test_a_virtual_service_retry_policy_becomes_nginx_retries() -> None:
    assert retry_policy({"attempts": 0}) == RetryPolicy((), 1, non_idempotent=False)
    policy = retry_policy({"attempts": 4, "retryOn": "gateway-error,429", "perTryTimeout": "1.5s"})
    assert policy.tries == 5
    assert policy.conditions == ("error", "timeout", "http_502", "http_503", "http_504", "http_429")
    assert render_retries(policy) == [
        "proxy_next_upstream error timeout http_502 http_503 http_504 http_429 non_idempotent;",
        "proxy_next_upstream_tries 5;",
        "proxy_read_timeout 1500ms;",
    ]
    # gRPC conditions mean nothing to an HTTP/1.1 proxy: no retries.
    assert render_retries(retry_policy({"attempts": 2, "retryOn": "cancelled"})) == [
        "proxy_next_upstream off;"
    ]
    with pytest.raises(ValueError, match="perTryTimeout 'soon'"):
        retry_policy({"attempts": 1, "perTryTimeout": "soon"})
