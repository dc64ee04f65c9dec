"""The chart as a user installs it: `helm install` into the local control plane, the
operator pod runs on the local node (the image `cricalgo/operator` is the
`cricalgo-operator` console script there), passes its probes on its own pod IP, and
reconciles the minimal example CR."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from cricalgo_localstack import polling
from cricalgo_localstack.binaries import ensure_helm
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.pytest_plugin import KubeCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cricalgo-operator"
EXAMPLE = REPO / "docs" / "examples" / "minimal.yaml"
RELEASE = "cricalgo"
# A bound on liveness, not a timing assertion: on a loaded 2-core machine an operator
# start (Python imports, Kopf's first list and watch) can take tens of seconds.
TIMEOUT = 180.0
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = TIMEOUT) -> T:
    return polling.wait_for(what, probe, timeout, interval=1.0)


def helm_run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def get_json(kube: KubeCluster, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kube.kubectl("get", *args, "-o", "json").stdout)
    return result


def operator_pod(kube: KubeCluster, namespace: str) -> dict[str, Any] | None:
    pods = get_json(kube, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}")[
        "items"
    ]
    return pods[0] if pods else None


def ready(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    if pod is None or pod.get("status", {}).get("phase") != "Running":
        return None
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
    return pod if conditions.get("Ready") == "True" else None


def listening(pid: int) -> set[tuple[str, int]]:
    """The IPv4 (address, port) pairs process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes:  # 0A: LISTEN
            address, port = local.split(":")
            octets = bytes.fromhex(address)[::-1]  # little-endian on x86 and arm64
            found.add((".".join(str(b) for b in octets), int(port, 16)))
    return found


def pod_log(node: LocalNode, namespace: str, pod: str) -> str:
    path = node.logs_dir / namespace / pod / "operator.log"
    return path.read_text()[-6000:] if path.exists() else "(no log)"


@pytest.mark.cluster
def test_operator_pod_runs_on_the_local_node_and_reconciles_the_minimal_example(
    kube_cluster: KubeCluster, local_node: LocalNode, namespace: str
) -> None:
    base = ["--kubeconfig", str(kube_cluster.kubeconfig), "--namespace", namespace]
    prometheus = "http://prometheus.monitoring.svc:9090"
    install = helm_run(
        "install",
        RELEASE,
        str(CHART),
        *base,
        # One namespace: the operator leaves other tests' CRs alone.
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "logFormat=text",
        "--set",
        f"prometheusUrl={prometheus}",
    )
    cr = yaml.safe_load(EXAMPLE.read_text())
    name = cr["metadata"]["name"]
    pod_name = "(not scheduled)"
    try:
        assert f"Canary analysis queries {prometheus}" in install.stdout
        pod = wait_for(
            "the operator pod to be Running and Ready",
            lambda: ready(operator_pod(kube_cluster, namespace)),
        )
        pod_name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == local_node.name
        pod_ip = pod["status"]["podIP"]
        assert pod_ip.startswith(local_node.ip_prefix + ".")
        (container,) = pod["status"]["containerStatuses"]
        assert container["ready"] is True
        assert container["restartCount"] == 0, pod_log(local_node, namespace, pod_name)

        # Its endpoints answer on the pod IP, and only there (not on 0.0.0.0).
        assert httpx.get(f"http://{pod_ip}:8081/healthz", timeout=10).status_code == 200
        metrics = httpx.get(f"http://{pod_ip}:8080/metrics", timeout=10).text
        assert "cricalgo_operator_" in metrics
        pid_file = local_node.logs_dir / namespace / pod_name / "operator.pid"
        sockets = listening(int(pid_file.read_text()))
        assert sockets >= {(pod_ip, 8080), (pod_ip, 8081)}
        assert not any(host == "0.0.0.0" for host, _ in sockets)

        kube_cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))

        def children() -> set[str] | None:
            names = set()
            for kind in ("deployments", "services"):
                for item in get_json(kube_cluster, kind, "-n", namespace)["items"]:
                    owners = item["metadata"].get("ownerReferences") or []
                    if any(o["kind"] == "CricAlgoDeployment" for o in owners):
                        names.add(f"{item['kind']}/{item['metadata']['name']}")
            return (
                names
                if {"Deployment/payments-app", "Deployment/payments-worker"} <= names
                else None
            )

        found = wait_for("the CR's child Deployments", children)
        assert {"Service/payments", "Service/payments-stable", "Service/payments-canary"} <= found

        def status_written() -> dict[str, Any] | None:
            obj = get_json(kube_cluster, "cad", name, "-n", namespace)
            status = obj.get("status") or {}
            current = status.get("observedGeneration") == obj["metadata"]["generation"]
            return status if current and status.get("phase") else None

        status = wait_for("the CR's status", status_written)
        assert status["stableImage"] == cr["spec"]["image"]
        assert {c["type"] for c in status["conditions"]} >= {"Ready", "Progressing"}
    except AssertionError as error:
        raise AssertionError(
            f"{error}\n--- operator log ---\n{pod_log(local_node, namespace, pod_name)}"
        ) from None
    finally:
        # The CR first, while the operator still runs to remove its finalizer.
        deleted = kube_cluster.kubectl(
            "delete",
            "cad",
            name,
            "-n",
            namespace,
            "--ignore-not-found",
            "--timeout=60s",
            check=False,
        )
        if deleted.returncode != 0:
            kube_cluster.kubectl(
                "patch",
                "cad",
                name,
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        helm_run("uninstall", RELEASE, *base, "--wait", check=False)
        wait_for(
            "the operator pod to be gone",
            lambda: operator_pod(kube_cluster, namespace) is None,
            60.0,
        )
