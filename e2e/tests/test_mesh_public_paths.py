"""Only the public paths reach the app: the operator's own traffic objects, rendered for a
CR and applied to the real API server, routed by the local mesh (real nginx) to real pods.

/metrics, /readyz and the users API are served by every app pod, yet through the mesh
they answer 404: the VirtualService and the Ingresses publish `traffic.publicPaths` only.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest
from cricalgo_localstack.mesh import LocalMesh
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.pytest_plugin import KubeCluster
from cricalgo_operator.model import Cad
from cricalgo_operator.naming import selector_labels
from cricalgo_operator.render import render

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

WEBHOOK = "/api/v1/webhooks/deposit"


def host(namespace: str) -> str:
    """A host of this test alone (the mesh serves every namespace; the first route wins)."""
    return f"pay.{namespace}.example.com"


def traffic_of(provider: str, namespace: str) -> dict[str, Any]:
    if provider == "istio":
        return {"provider": "istio", "hosts": [host(namespace)]}
    return {"provider": "nginx", "hosts": [host(namespace)], "ingressClassName": "nginx"}


ROUTER_KINDS = {"Service", "VirtualService", "DestinationRule", "Ingress"}


def apply(cluster: KubeCluster, namespace: str, *manifests: dict[str, Any]) -> None:
    """Apply, retrying while the namespace's default ServiceAccount does not exist yet."""
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
    for _ in range(80):
        proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)
        if proc.returncode == 0:
            return
        if "serviceaccount" not in proc.stderr:
            raise AssertionError(proc.stderr)
        time.sleep(0.25)
    raise AssertionError("could not apply the manifests")


def router_objects(namespace: str, traffic: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator applies for a CR's traffic, without the owner reference (there is
    no CR here, and the garbage collector deletes dependents of a missing owner)."""
    cad = Cad.from_body(
        {
            "metadata": {"name": "pay", "namespace": namespace, "uid": "none"},
            "spec": {
                "image": "cricalgo/probe:v1",
                "database": {"secretRef": {"name": "db"}},
                "redis": {"secretRef": {"name": "redis"}},
                "traffic": traffic,
            },
        }
    )
    out = []
    for manifest in render(cad):
        if manifest["kind"] in ROUTER_KINDS:
            manifest["metadata"].pop("ownerReferences", None)
            out.append(manifest)
    return out


def app_pod(name: str) -> dict[str, Any]:
    """A pod the CR's Services select, answering every path (the probe server)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": selector_labels("pay", "app", "stable")},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": "cricalgo/probe:v1",
                    "args": ["--port", "8000"],
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def get(mesh: LocalMesh, namespace: str, path: str) -> tuple[int, str]:
    address, port = mesh.listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(address, int(port), timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host(namespace)})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("provider", ["istio", "nginx"])
def test_only_the_webhook_path_is_published_by_default(
    kube_cluster: KubeCluster,
    local_node: LocalNode,
    local_mesh: LocalMesh,
    namespace: str,
    provider: str,
) -> None:
    apply(kube_cluster, namespace, app_pod("pay-app-a"))
    kube_cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/pay-app-a", "-n", namespace, "--timeout=90s"
    )
    apply(kube_cluster, namespace, *router_objects(namespace, traffic_of(provider, namespace)))
    wait_for(
        "the mesh to route the webhook",
        lambda: get(local_mesh, namespace, WEBHOOK) == (200, "pay-app-a"),
    )

    # Every pod serves these; the mesh must not route them.
    for path in ("/metrics", "/readyz", "/healthz", "/api/v1/users/alice", "/", f"{WEBHOOK}/x"):
        status, body = get(local_mesh, namespace, path)
        assert status == 404, (path, status, body)
        assert "pay-app-a" not in body


def test_listed_prefixes_are_published_too(
    kube_cluster: KubeCluster,
    local_node: LocalNode,
    local_mesh: LocalMesh,
    namespace: str,
) -> None:
    apply(kube_cluster, namespace, app_pod("pay-app-b"))
    kube_cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/pay-app-b", "-n", namespace, "--timeout=90s"
    )
    traffic = {
        **traffic_of("istio", namespace),
        "publicPaths": [{"path": WEBHOOK}, {"path": "/api/v1/users", "match": "Prefix"}],
    }
    apply(kube_cluster, namespace, *router_objects(namespace, traffic))
    wait_for(
        "the mesh to route the users API",
        lambda: get(local_mesh, namespace, "/api/v1/users/alice") == (200, "pay-app-b"),
    )
    assert get(local_mesh, namespace, WEBHOOK) == (200, "pay-app-b")
    assert get(local_mesh, namespace, "/metrics")[0] == 404
