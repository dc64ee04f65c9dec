"""The product as shipped, on a real kubelet: the chart installs the operator's image, whose
pod reaches the API server through the `kubernetes` Service (kube-proxy); a
CricAlgoDeployment's app and worker run from the workload image under the rendered security
context; deposits sent to the app's pod IP are credited by the worker pod in PostgreSQL.
Faults only a real node has: a killed container, the OOM killer, and the mesh (nginx on the
host, routing to pod IPs) dropping a pod whose readiness probe fails."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from cricalgo_localstack.binaries import ensure_helm
from cricalgo_localstack.deposits import deposit_body, new_secret, post_deposit
from cricalgo_localstack.images import PROBE_IMAGE
from cricalgo_localstack.mesh import LocalMesh
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.pytest_plugin import RealNodeCluster
from cricalgo_localstack.services import NginxServer, new_work_dir

# Building the node's binaries and both images cold, then starting a control plane, a node
# and pods from images on a loaded 2-core machine.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cricalgo-operator"
WORKLOAD_IMAGE = "cricalgo/workload:test"


@dataclass
class Installed:
    """The operator installed by the chart and one CricAlgoDeployment Ready on the node."""

    real: RealNodeCluster
    namespace: str
    name: str
    secret: str
    dsn: str

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.real.cluster.kubectl(*args, check=check)

    def pods(self, component: str) -> list[dict[str, Any]]:
        listed = json.loads(
            self.kubectl(
                "get", "pods", "-n", self.namespace, "-l",
                f"app.kubernetes.io/component={component}", "-o", "json",
            ).stdout
        )  # fmt: skip
        items: list[dict[str, Any]] = listed["items"]
        return items

    def credited(self, tx_id: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM ledger_entries WHERE tx_id = %s", (tx_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def context(self) -> str:
        return self.kubectl("get", "pods", "-n", self.namespace, "-o", "wide", check=False).stdout


def _helm(real: RealNodeCluster, *args: str) -> None:
    proc = subprocess.run(
        [str(ensure_helm()), f"--kubeconfig={real.cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _cad(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": name},
        "spec": {
            "image": WORKLOAD_IMAGE,
            "env": [
                {
                    "name": "CRICALGO_WEBHOOK_SECRET",
                    "valueFrom": {"secretKeyRef": {"name": f"{name}-webhook", "key": "secret"}},
                }
            ],
            "database": {"secretRef": {"name": f"{name}-db", "key": "dsn"}},
            "redis": {"secretRef": {"name": f"{name}-redis", "key": "url"}},
            "traffic": {"provider": "none"},
            "app": {"replicas": {"min": 1, "max": 1}},
            "worker": {"replicas": {"min": 1, "max": 1}},
        },
    }


@pytest.fixture(scope="module")
def installed(real_node: RealNodeCluster) -> Iterator[Installed]:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    cluster = real_node.cluster
    cluster.kubectl("create", "namespace", namespace)
    dsn = real_node.postgres.create_database(f"real_{uuid.uuid4().hex[:8]}")
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "cricalgo-workload"), "migrate"],
        env={**os.environ, "DATABASE_URL": dsn}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES ('alice')")
    name, secret = "payments", new_secret()
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-{key}"},
         "stringData": {field: value}}
        for key, field, value in (
            ("db", "dsn", dsn), ("redis", "url", real_node.redis.url), ("webhook", "secret", secret)
        )
    ]  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(secrets))
    try:
        _helm(
            real_node, "install", "cricalgo", str(CHART), "--namespace", namespace,
            "--set", f"watchNamespaces={{{namespace}}}",
            "--set", "image.repository=cricalgo/operator,image.tag=test,image.pullPolicy=Never",
            "--set", "replicaCount=1,analysis=false",
            "--wait", "--timeout=10m",
        )  # fmt: skip
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_cad(name)))
        done = cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Ready", f"cad/{name}", "--timeout=600s",
            check=False,
        )  # fmt: skip
        installed = Installed(real_node, namespace, name, secret, dsn)
        assert done.returncode == 0, f"{done.stderr}\n{installed.context()}"
        yield installed
    finally:
        cluster.kubectl(
            "delete", "cad", name, "-n", namespace, "--ignore-not-found", "--timeout=120s",
            check=False,
        )  # fmt: skip
        _helm(real_node, "uninstall", "cricalgo", "--namespace", namespace, "--wait")
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _app_url(installed: Installed) -> str:
    (pod,) = [p for p in installed.pods("app") if p["status"].get("podIP")]
    (container,) = pod["spec"]["containers"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    return f"http://{pod['status']['podIP']}:{port}"


def test_the_chart_runs_the_operator_image_which_runs_the_workload_image(
    installed: Installed,
) -> None:
    (operator,) = json.loads(
        installed.kubectl(
            "get", "pods", "-n", installed.namespace, "-l",
            "app.kubernetes.io/name=cricalgo-operator", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    assert operator["spec"]["nodeName"] == installed.real.node.name
    assert operator["spec"]["containers"][0]["image"] == "cricalgo/operator:test"
    assert operator["spec"]["serviceAccountName"] != "default"
    # The API server reaches the kubelet on the node's (non-loopback) address.
    logs = installed.kubectl("logs", "-n", installed.namespace, operator["metadata"]["name"])
    assert logs.stdout.strip()
    for component in ("app", "worker"):
        (pod,) = installed.pods(component)
        assert pod["spec"]["nodeName"] == installed.real.node.name
        (container,) = pod["spec"]["containers"]
        assert container["image"] == WORKLOAD_IMAGE
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] is True
        assert status["containerID"].startswith("containerd://")


def test_a_deposit_sent_to_the_app_pod_is_credited_by_the_worker_pod(
    installed: Installed,
) -> None:
    with httpx.Client(base_url=_app_url(installed), timeout=15) as http:
        status, tx_id = post_deposit(
            http, installed.secret, deposit_body(user_id="alice", amount="7.25")
        )
    assert status == 202
    wait_for(
        "the worker pod to credit the deposit",
        lambda: installed.credited(tx_id) == 1,
        timeout=120,
        context=installed.context,
    )


def _send(installed: Installed, count: int, amount: str) -> list[str]:
    sent = []
    with httpx.Client(base_url=_app_url(installed), timeout=15) as http:
        for _ in range(count):
            status, tx_id = post_deposit(
                http, installed.secret, deposit_body(user_id="alice", amount=amount)
            )
            assert status == 202
            assert tx_id is not None
            sent.append(tx_id)
    return sent


def test_a_killed_worker_container_is_restarted_by_the_kubelet_and_no_deposit_is_lost(
    installed: Installed,
) -> None:
    (pod,) = installed.pods("worker")
    (status,) = pod["status"]["containerStatuses"]
    container_id = status["containerID"].removeprefix("containerd://")
    containerd = installed.real.node.containerd
    assert containerd is not None
    sent = _send(installed, 10, "1.00")
    containerd.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)
    sent += _send(installed, 10, "2.00")

    def restarted() -> bool:
        (again,) = installed.pods("worker")
        (now,) = again["status"]["containerStatuses"]
        return bool(now["restartCount"] > status["restartCount"] and now["ready"])

    wait_for("the kubelet to restart the killed worker", restarted, 300, installed.context)
    wait_for(
        "every deposit credited exactly once",
        lambda: all(installed.credited(tx) == 1 for tx in sent),
        timeout=300,
        context=installed.context,
    )
    assert [installed.credited(tx) for tx in sent] == [1] * len(sent)


def test_a_container_over_its_memory_limit_is_oom_killed(installed: Installed) -> None:
    """The memory limit the operator renders is the kernel's: a container that allocates past
    its limit is killed by the OOM killer and the kubelet reports why."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "over-limit"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "allocate",
                    "image": WORKLOAD_IMAGE,
                    "imagePullPolicy": "Never",
                    # 256 MiB written (every page touched) under a 64 MiB limit.
                    "command": ["python3", "-c", "b = b'x' * (256 * 2**20)"],
                    "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}},
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    installed.real.cluster.kubectl(
        "apply", "-n", installed.namespace, "-f", "-", input=yaml.safe_dump(pod)
    )

    def terminated() -> dict[str, Any] | None:
        current = json.loads(
            installed.kubectl(
                "get", "pod", "over-limit", "-n", installed.namespace, "-o", "json"
            ).stdout
        )
        statuses = current["status"].get("containerStatuses") or [{}]
        state: dict[str, Any] | None = statuses[0].get("state", {}).get("terminated")
        return state

    state = wait_for("the allocating container to end", terminated, 180, installed.context)
    assert state["reason"] == "OOMKilled"
    assert state["exitCode"] == 137


def _probe_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "web",
                    "image": PROBE_IMAGE,
                    "imagePullPolicy": "Never",
                    "env": [
                        {"name": "POD_NAME", "value": name},
                        {"name": "CRICALGO_HOST", "value": "0.0.0.0"},
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


ROUTE = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    },
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {
            "hosts": ["web.real.test"],
            "http": [{"route": [{"destination": {"host": "web"}}]}],
        },
    },
]


@pytest.fixture(scope="module")
def real_mesh(real_node: RealNodeCluster) -> Iterator[LocalMesh]:
    """The local mesh (nginx on the host) for the real node's cluster: it routes to pod IPs."""
    nginx = NginxServer(new_work_dir("real-mesh"))
    nginx.start()
    mesh = LocalMesh(
        real_node.cluster.kubeconfig, nginx.apply_http_config, listen=f"127.0.0.1:{nginx.port}"
    )
    mesh.start()
    try:
        yield mesh
    finally:
        mesh.stop()
        nginx.stop()
        shutil.rmtree(nginx.work_dir, ignore_errors=True)


def _through_mesh(mesh: LocalMesh, count: int) -> Counter[str]:
    """`count` GETs of web.real.test through the mesh: the answering pods' names."""
    address, port = mesh.listen.rsplit(":", 1)
    seen: Counter[str] = Counter()
    for _ in range(count):
        conn = http.client.HTTPConnection(address, int(port), timeout=5)
        try:
            conn.request("GET", "/", headers={"Host": "web.real.test"})
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        seen[body if response.status == 200 else f"HTTP {response.status}"] += 1
    return seen


def test_a_pod_failing_readiness_gets_no_traffic_through_the_mesh(
    installed: Installed, real_mesh: LocalMesh
) -> None:
    manifests = [_probe_pod("web-a"), _probe_pod("web-b"), *ROUTE]
    installed.real.cluster.kubectl(
        "apply", "-n", installed.namespace, "-f", "-", input=yaml.safe_dump_all(manifests)
    )
    installed.kubectl(
        "wait", "--for=condition=Ready", "pod/web-a", "pod/web-b", "-n", installed.namespace,
        "--timeout=120s",
    )  # fmt: skip
    wait_for(
        "the mesh to route to both pods",
        lambda: set(_through_mesh(real_mesh, 12)) == {"web-a", "web-b"},
        timeout=60,
        context=lambda: real_mesh.config,
    )
    pod_b = json.loads(
        installed.kubectl("get", "pod", "web-b", "-n", installed.namespace, "-o", "json").stdout
    )
    conn = http.client.HTTPConnection(pod_b["status"]["podIP"], 8080, timeout=5)
    conn.request("POST", "/unready")
    assert conn.getresponse().status == 200
    conn.close()
    wait_for(
        "the unready pod to leave the mesh",
        lambda: set(_through_mesh(real_mesh, 12)) == {"web-a"},
        timeout=60,
        context=lambda: real_mesh.config,
    )
    assert _through_mesh(real_mesh, 100) == Counter({"web-a": 100})
