"""The project's own workload image runs on the local node: `migrate` as a pod that
completes, then the webhook and a worker, bound to their pod IPs and Ready from their probes."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any

import pytest
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.pytest_plugin import KubeCluster
from cricalgo_localstack.services import PostgresServer, RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SECRET = "whsec_" + base64.b64encode(b"local-node-test-secret-0123456789").decode()


def apply(cluster: KubeCluster, namespace: str, *manifests: dict[str, Any]) -> None:
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
    for _ in range(80):
        proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)
        if proc.returncode == 0:
            return
        if "serviceaccount" not in proc.stderr:
            raise AssertionError(proc.stderr)
        time.sleep(0.25)
    raise AssertionError("could not apply the manifests")


def workload_pod(name: str, role: str, restart: str = "Always", **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": role,
        "image": "cricalgo/workload:v1",
        "args": [role],
        "envFrom": [{"secretRef": {"name": "workload"}}],
        "env": [
            {
                "name": "CRICALGO_TRACK",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['track']"}},
            },
            {"name": "CRICALGO_VERSION", "value": "v1"},
        ],
        **extra,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"track": "stable", "role": role}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    }


def pod_json(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
    )
    return result


def test_workload_roles_run_as_pods_on_their_pod_ips(
    kube_cluster: KubeCluster,
    local_node: LocalNode,
    namespace: str,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
) -> None:
    dsn = postgres_server.create_database(f"node_{namespace.replace('-', '_')}")
    apply(
        kube_cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "workload"},
            "stringData": {
                "DATABASE_URL": dsn,
                "REDIS_URL": redis_server.url,
                "CRICALGO_WEBHOOK_SECRET": SECRET,
                "CRICALGO_API_TOKEN": "token",
            },
        },
        workload_pod("migrate", "migrate", restart="Never"),
    )
    kube_cluster.kubectl(
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/migrate",
        "-n",
        namespace,
        "--timeout=90s",
    )
    (migrated,) = pod_json(kube_cluster, namespace, "migrate")["status"]["containerStatuses"]
    assert migrated["state"]["terminated"]["exitCode"] == 0

    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}
    apply(
        kube_cluster,
        namespace,
        workload_pod(
            "webhook",
            "webhook",
            ports=[{"name": "http", "containerPort": 8000}],
            readinessProbe=probe,
            livenessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
        ),
        workload_pod("worker", "worker"),
    )
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        "pod/webhook",
        "pod/worker",
        "-n",
        namespace,
        "--timeout=90s",
    )
    webhook = pod_json(kube_cluster, namespace, "webhook")
    pod_ip = webhook["status"]["podIP"]
    assert pod_ip.startswith(local_node.ip_prefix + ".")
    with urllib.request.urlopen(f"http://{pod_ip}:8000/healthz", timeout=5) as response:
        assert response.status == 200
    worker = pod_json(kube_cluster, namespace, "worker")
    (status,) = worker["status"]["containerStatuses"]
    assert status["restartCount"] == 0
    assert status["state"].get("running")
