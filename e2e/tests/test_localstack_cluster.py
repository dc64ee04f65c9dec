"""The local control plane is a real Kubernetes: it validates, garbage-collects,
runs controllers, enforces RBAC and serves the Istio CRDs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from cricalgo_localstack.pytest_plugin import KubeCluster

pytestmark = pytest.mark.cluster

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.probe.cricalgo.io
spec:
  group: probe.cricalgo.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
"""


def _eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _get_json(cluster: KubeCluster, *args: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


def test_api_server_reports_the_pinned_version(kube_cluster: KubeCluster) -> None:
    version = json.loads(kube_cluster.kubectl("get", "--raw=/version").stdout)
    assert version["major"] == "1"
    assert int(version["minor"].rstrip("+")) >= 34


def test_crd_accepts_a_valid_object_and_rejects_one_breaking_the_schema(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=WIDGET_CRD)
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.probe.cricalgo.io", "--timeout=30s"
    )
    good = "apiVersion: probe.cricalgo.io/v1\nkind: Widget\nmetadata: {name: ok}\nspec: {size: 3}\n"
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=good)
    assert _get_json(kube_cluster, "widget", "ok", "-n", namespace)["spec"] == {"size": 3}

    bad = good.replace("name: ok", "name: bad").replace("size: 3", "size: 0")
    rejected = kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert rejected.returncode != 0
    assert "spec.size" in rejected.stderr
    assert "should be greater than or equal to 1" in rejected.stderr


def test_istio_virtual_service_can_be_created(kube_cluster: KubeCluster, namespace: str) -> None:
    manifest = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: probe}
spec:
  hosts: [probe.example.com]
  http:
    - route:
        - {destination: {host: probe, subset: stable}, weight: 90}
        - {destination: {host: probe, subset: canary}, weight: 10}
"""
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    spec = _get_json(kube_cluster, "virtualservice", "probe", "-n", namespace)["spec"]
    weights = [route["weight"] for route in spec["http"][0]["route"]]  # type: ignore[index]
    assert weights == [90, 10]


def test_deployment_yields_a_replicaset_and_pods(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl(
        "create", "deployment", "probe", "--image=cricalgo/probe:1", "--replicas=2", "-n", namespace
    )

    def pods_created() -> bool:
        pods = _get_json(kube_cluster, "pods", "-n", namespace, "-l", "app=probe")["items"]
        return len(pods) == 2  # type: ignore[arg-type]

    _eventually(pods_created, what="the Deployment's two Pods")
    replicasets = _get_json(kube_cluster, "replicasets", "-n", namespace)["items"]
    assert len(replicasets) == 1  # type: ignore[arg-type]
    owner = replicasets[0]["metadata"]["ownerReferences"][0]  # type: ignore[index]
    assert (owner["kind"], owner["name"]) == ("Deployment", "probe")


def test_deleting_an_owner_garbage_collects_its_child(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = _get_json(kube_cluster, "configmap", "owner", "-n", namespace)["metadata"]["uid"]  # type: ignore[index]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(child))
    kube_cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def child_gone() -> bool:
        found = kube_cluster.kubectl(
            "get", "configmap", "child", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return found.stdout.strip() == ""

    _eventually(child_gone, what="the garbage collector to delete the child")


def test_rbac_is_enforced_for_service_account_tokens(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = kube_cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    as_reader = KubeCluster(
        kubeconfig=kube_cluster.kubeconfig_for_token(token),
        server=kube_cluster.server,
        ca_file=kube_cluster.ca_file,
        kubectl_path=kube_cluster.kubectl_path,
        scratch=kube_cluster.scratch,
    )
    denied = as_reader.kubectl("get", "configmaps", "-n", namespace, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    kube_cluster.kubectl(
        "create", "role", "cm-reader", "--verb=list", "--resource=configmaps", "-n", namespace
    )
    kube_cluster.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    _eventually(
        lambda: (
            as_reader.kubectl("get", "configmaps", "-n", namespace, check=False).returncode == 0
        ),
        timeout=20,
        what="the RoleBinding to take effect",
    )
