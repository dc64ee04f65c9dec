"""The local node runs pods as processes on their own loopback address, as a kubelet would:
env from Secrets, ConfigMaps and the downward API, probes, restarts, graceful deletion."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.processes import pid_alive
from cricalgo_localstack.pytest_plugin import KubeCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    return wait_for(what, check, timeout, interval=0.25)


def apply(cluster: KubeCluster, namespace: str, manifest: dict[str, Any]) -> None:
    """Apply, retrying while the namespace's default ServiceAccount does not exist yet."""
    text = json.dumps(manifest)
    for _ in range(80):
        proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)
        if proc.returncode == 0:
            return
        if "serviceaccount" not in proc.stderr:
            raise AssertionError(proc.stderr)
        time.sleep(0.25)
    raise AssertionError(f"could not apply {manifest['metadata']['name']}")


def get_pod(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def conditions(pod: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}


def probe_pod(name: str, port: int = 8080, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "probe",
        "image": "cricalgo/probe:v1",
        "args": ["--port", str(port)],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        **container,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, "track": "stable"}},
        "spec": {"containers": [spec], "terminationGracePeriodSeconds": 5},
    }


def wait_ready(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = get_pod(cluster, namespace, name)
        return pod if pod and conditions(pod).get("Ready") == "True" else None

    return eventually(ready, 60, f"pod {name} Ready")  # type: ignore[no-any-return]


def http(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_node_is_registered_ready_with_a_lease(
    kube_cluster: KubeCluster, local_node: LocalNode
) -> None:
    def get_node() -> dict[str, Any]:
        proc = kube_cluster.kubectl("get", "node", local_node.name, "-o", "json")
        node: dict[str, Any] = json.loads(proc.stdout)
        return node

    node = get_node()
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert int(node["status"]["capacity"]["pods"]) > 0
    # The node-lifecycle controller taints a new node not-ready until it has seen it Ready.
    eventually(lambda: not get_node()["spec"].get("taints"), 30, "the not-ready taint removed")
    lease = json.loads(
        kube_cluster.kubectl(
            "get", "lease", local_node.name, "-n", "kube-node-lease", "-o", "json"
        ).stdout
    )
    assert lease["spec"]["holderIdentity"] == local_node.name


def test_pod_runs_on_its_own_loopback_ip_with_resolved_env_and_args(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    apply(
        kube_cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret", "TOKEN": "t0ken"},
        },
    )
    apply(
        kube_cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"port": "8181", "LEVEL": "debug"},
        },
    )
    pod = probe_pod(
        "env-probe",
        port=8181,
        args=["--port", "$(LISTEN_PORT)"],
        env=[
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "MY_TRACK",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['track']"}},
            },
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
            },
            {
                "name": "LISTEN_PORT",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "port"}},
            },
            {"name": "GREETING", "value": "hello $(MY_NS)"},
            {"name": "CRICALGO_HOST", "value": "0.0.0.0"},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}}],
    )
    apply(kube_cluster, namespace, pod)
    ready = wait_ready(kube_cluster, namespace, "env-probe")

    pod_ip = ready["status"]["podIP"]
    assert pod_ip.startswith(local_node.ip_prefix + ".")
    assert ready["status"]["phase"] == "Running"
    assert conditions(ready) == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    (status,) = ready["status"]["containerStatuses"]
    assert status["ready"] is True
    assert "running" in status["state"]
    assert status["restartCount"] == 0

    assert http(f"http://{pod_ip}:8181/") == (200, "env-probe")
    _, body = http(f"http://{pod_ip}:8181/env")
    seen = json.loads(body)
    env = seen["env"]
    assert seen["argv"] == ["--port", "8181"]
    assert env["MY_IP"] == pod_ip
    # The node, not the manifest, decides the address a pod binds.
    assert env["CRICALGO_HOST"] == pod_ip
    assert env["MY_NS"] == namespace
    assert env["MY_TRACK"] == "stable"
    assert env["PASSWORD"] == "s3cret"
    assert env["TOKEN"] == "t0ken"
    assert env["LEVEL"] == "debug"
    assert env["GREETING"] == f"hello {namespace}"

    log = local_node.logs_dir / namespace / "env-probe" / "probe.log"
    assert f"listening on {pod_ip}:8181" in log.read_text()


def test_pod_of_an_unknown_image_stays_pending_with_a_warning_event(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    pod = probe_pod("stranger", image="docker.io/library/nginx:1.27")
    apply(kube_cluster, namespace, pod)

    def warning() -> list[dict[str, Any]]:
        events = json.loads(
            kube_cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        )["items"]
        return [e for e in events if e["type"] == "Warning" and e["reason"] == "UnknownImage"]

    (event,) = eventually(warning, 30, "an UnknownImage event")
    assert "docker.io/library/nginx:1.27" in event["message"]
    assert event["involvedObject"]["name"] == "stranger"
    pod_now = get_pod(kube_cluster, namespace, "stranger")
    assert pod_now is not None
    assert pod_now["status"]["phase"] == "Pending"
    waiting = pod_now["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "UnknownImage"


def test_readiness_follows_the_probe_and_a_failing_liveness_probe_restarts(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    pod = probe_pod(
        "flaky",
        livenessProbe={
            "httpGet": {"path": "/healthz", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    apply(kube_cluster, namespace, pod)
    pod_ip = wait_ready(kube_cluster, namespace, "flaky")["status"]["podIP"]

    assert http(f"http://{pod_ip}:8080/unready", "POST")[0] == 200

    def not_ready() -> bool:
        current = get_pod(kube_cluster, namespace, "flaky")
        return bool(current and conditions(current)["Ready"] == "False")

    eventually(not_ready, 30, "Ready=False after the readiness probe fails")
    assert http(f"http://{pod_ip}:8080/ready", "POST")[0] == 200
    wait_ready(kube_cluster, namespace, "flaky")

    assert http(f"http://{pod_ip}:8080/sick", "POST")[0] == 200

    def restarted() -> dict[str, Any] | None:
        current = get_pod(kube_cluster, namespace, "flaky")
        if not current:
            return None
        (status,) = current["status"]["containerStatuses"]
        return current if status["restartCount"] == 1 and status["ready"] else None

    after = eventually(restarted, 60, "a restart after the liveness probe fails")
    (status,) = after["status"]["containerStatuses"]
    assert status["lastState"]["terminated"]["finishedAt"]
    # The new process is healthy again, on the same pod IP.
    assert after["status"]["podIP"] == pod_ip
    assert http(f"http://{pod_ip}:8080/healthz") == (200, "ok\n")


def test_deletion_sends_sigterm_waits_the_grace_period_then_kills(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    pod = probe_pod("stubborn", args=["--port", "8080", "--ignore-sigterm"])
    pod["spec"]["terminationGracePeriodSeconds"] = 2
    apply(kube_cluster, namespace, pod)
    ready = wait_ready(kube_cluster, namespace, "stubborn")
    pid = int(ready["status"]["containerStatuses"][0]["containerID"].rsplit("/", 1)[1])
    assert pid_alive(pid)

    kube_cluster.kubectl("delete", "pod", "stubborn", "-n", namespace, "--wait=false")
    eventually(
        lambda: get_pod(kube_cluster, namespace, "stubborn") is None, 30, "the pod object removed"
    )
    assert not pid_alive(pid)
    log = (local_node.logs_dir / namespace / "stubborn" / "probe.log").read_text()
    # It got SIGTERM first and ignored it; only SIGKILL after the grace period ended it.
    assert "signal 15, ignored" in log


def test_pod_reaches_the_api_server_as_its_service_account(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    apply(kube_cluster, namespace, probe_pod("with-sa"))
    opted_out = probe_pod("without-sa")
    opted_out["spec"]["automountServiceAccountToken"] = False
    apply(kube_cluster, namespace, opted_out)
    with_sa = wait_ready(kube_cluster, namespace, "with-sa")["status"]["podIP"]
    without_sa = wait_ready(kube_cluster, namespace, "without-sa")["status"]["podIP"]

    env = json.loads(http(f"http://{with_sa}:8080/env")[1])["env"]
    whoami = kube_cluster.kubectl(
        "--kubeconfig", env["KUBECONFIG"], "auth", "whoami", "-o", "jsonpath={.status.userInfo}"
    )
    identity = json.loads(whoami.stdout)
    assert identity["username"] == f"system:serviceaccount:{namespace}:default"
    # A bound token: the API server knows which pod holds it.
    assert identity["extra"]["authentication.kubernetes.io/pod-name"] == ["with-sa"]
    assert "KUBECONFIG" not in json.loads(http(f"http://{without_sa}:8080/env")[1])["env"]


def test_deletion_runs_the_prestop_hook_before_sigterm(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    marker = kube_cluster.scratch / f"prestop-{namespace}"
    pod = probe_pod(
        "hooked",
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", f"echo $POD_NAME > {marker}"]}}},
    )
    apply(kube_cluster, namespace, pod)
    wait_ready(kube_cluster, namespace, "hooked")

    kube_cluster.kubectl("delete", "pod", "hooked", "-n", namespace, "--wait=false")
    eventually(
        lambda: get_pod(kube_cluster, namespace, "hooked") is None, 30, "the pod object removed"
    )
    assert marker.read_text() == "hooked\n"
    log = (local_node.logs_dir / namespace / "hooked" / "probe.log").read_text()
    assert log.index("--- preStop: exec sh exited 0") < log.index("signal 15, shutting down")
