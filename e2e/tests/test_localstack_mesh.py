"""The local mesh splits real traffic between real pods exactly as the traffic objects say:
1,000 requests through nginx land within 3 points of the VirtualService or canary-Ingress
weights; a pod being deleted leaves the mesh without a failed request."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from cricalgo_localstack.mesh import LocalMesh
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.pytest_plugin import KubeCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REQUESTS = 1000


def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    return wait_for(what, check, timeout, interval=0.25)


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


def web_pod(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web", "version": version}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": "cricalgo/probe:v1",
                    "args": ["--port", "8080"],
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": "http"}]},
    }


def virtual_service(stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {
            "hosts": ["web.example.com"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "web", "subset": "stable"}, "weight": stable},
                        {"destination": {"host": "web", "subset": "canary"}, "weight": canary},
                    ]
                }
            ],
        },
    }


DESTINATION_RULE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "web"},
    "spec": {
        "host": "web",
        "subsets": [
            {"name": "stable", "labels": {"version": "v1"}},
            {"name": "canary", "labels": {"version": "v2"}},
        ],
    },
}


def ingress(name: str, backend: str, canary_weight: int | None = None) -> dict[str, Any]:
    annotations = {}
    if canary_weight is not None:
        annotations = {
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": str(canary_weight),
        }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "annotations": annotations},
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


def send(mesh: LocalMesh, host: str, count: int) -> Counter[str]:
    """`count` GETs through the mesh with this Host header; the answering pods' names."""
    address, port = mesh.listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(address, int(port), timeout=5)
    seen: Counter[str] = Counter()
    try:
        for _ in range(count):
            try:
                conn.request("GET", "/", headers={"Host": host})
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # An nginx worker retiring after a reload closes idle keep-alive connections;
                # a client opens a new one and repeats its GET.
                conn.close()
                conn.request("GET", "/", headers={"Host": host})
                response = conn.getresponse()
            body = response.read().decode()
            seen[body if response.status == 200 else f"HTTP {response.status}"] += 1
    finally:
        conn.close()
    return seen


def share(seen: Counter[str], prefix: str) -> float:
    return 100.0 * sum(n for pod, n in seen.items() if pod.startswith(prefix)) / sum(seen.values())


def routes_to(mesh: LocalMesh, host: str, pods: set[str]) -> Callable[[], bool]:
    """The mesh answers for `host` from exactly these pods (the config has converged)."""
    return lambda: set(send(mesh, host, 3 * len(pods) + 3)) == pods


@pytest.fixture
def web_pods(kube_cluster: KubeCluster, local_node: LocalNode, namespace: str) -> set[str]:
    names = {"stable-a": "v1", "stable-b": "v1", "canary-a": "v2"}
    apply(kube_cluster, namespace, *(web_pod(name, version) for name, version in names.items()))
    kube_cluster.kubectl(
        "wait", "--for=condition=Ready", "pod", "--all", "-n", namespace, "--timeout=90s"
    )
    return set(names)


def test_virtual_service_weights_split_1000_requests_within_3_points(
    kube_cluster: KubeCluster, local_mesh: LocalMesh, namespace: str, web_pods: set[str]
) -> None:
    apply(
        kube_cluster,
        namespace,
        service("web", {"app": "web"}),
        DESTINATION_RULE,
        virtual_service(75, 25),
    )
    eventually(routes_to(local_mesh, "web.example.com", web_pods), 60, "the mesh routing 75/25")

    seen = send(local_mesh, "web.example.com", REQUESTS)
    print(f"75/25 split over {REQUESTS} requests: {dict(seen)}")
    assert sum(seen.values()) == REQUESTS
    assert abs(share(seen, "canary") - 25) <= 3
    assert abs(share(seen, "stable") - 75) <= 3

    apply(kube_cluster, namespace, virtual_service(90, 10))
    eventually(lambda: "subset canary 10%" in local_mesh.config, 30, "the mesh at 90/10")
    seen = send(local_mesh, "web.example.com", REQUESTS)
    print(f"90/10 split over {REQUESTS} requests: {dict(seen)}")
    assert abs(share(seen, "canary") - 10) <= 3
    assert abs(share(seen, "stable") - 90) <= 3

    # Weight 0 takes the canary out entirely; an unknown host gets a 404 from the mesh.
    apply(kube_cluster, namespace, virtual_service(100, 0))
    eventually(routes_to(local_mesh, "web.example.com", {"stable-a", "stable-b"}), 30, "100/0")
    assert set(send(local_mesh, "nowhere.example.com", 2)) == {"HTTP 404"}


def test_canary_ingress_weight_splits_traffic_and_not_ready_pods_leave_the_mesh(
    kube_cluster: KubeCluster, local_mesh: LocalMesh, namespace: str, web_pods: set[str]
) -> None:
    apply(
        kube_cluster,
        namespace,
        service("web-stable", {"app": "web", "version": "v1"}),
        service("web-canary", {"app": "web", "version": "v2"}),
        ingress("shop", "web-stable"),
        ingress("shop-canary", "web-canary", canary_weight=25),
    )
    eventually(routes_to(local_mesh, "shop.example.com", web_pods), 60, "the ingress routing")
    seen = send(local_mesh, "shop.example.com", REQUESTS)
    print(f"canary-weight 25 over {REQUESTS} requests: {dict(seen)}")
    assert abs(share(seen, "canary") - 25) <= 3

    # A pod that fails its readiness probe stops getting traffic.
    pod = json.loads(
        kube_cluster.kubectl("get", "pod", "stable-b", "-n", namespace, "-o", "json").stdout
    )
    conn = http.client.HTTPConnection(pod["status"]["podIP"], 8080, timeout=3)
    conn.request("POST", "/unready")
    assert conn.getresponse().status == 200
    conn.close()
    eventually(
        routes_to(local_mesh, "shop.example.com", {"stable-a", "canary-a"}),
        30,
        "the unready pod out of the mesh",
    )
    seen = send(local_mesh, "shop.example.com", 400)
    assert abs(share(seen, "canary") - 25) <= 3


def two_routed_pods(
    cluster: KubeCluster,
    mesh: LocalMesh,
    namespace: str,
    customize: Callable[[dict[str, Any]], None],
) -> str:
    """Pods web-a and web-b (each changed by `customize`) behind one route, both in the
    mesh's upstreams; web-b's pod IP."""
    pods = []
    for name in ("web-a", "web-b"):
        pod = web_pod(name, "v1")
        customize(pod)
        pods.append(pod)
    route = virtual_service(100, 0)
    route["spec"]["http"][0]["route"] = [{"destination": {"host": "web"}}]
    apply(cluster, namespace, *pods, service("web", {"app": "web"}), route)
    cluster.kubectl(
        "wait", "--for=condition=Ready", "pod", "--all", "-n", namespace, "--timeout=90s"
    )
    eventually(routes_to(mesh, "web.example.com", {"web-a", "web-b"}), 60, "both pods")
    pod_b = json.loads(cluster.kubectl("get", "pod", "web-b", "-n", namespace, "-o", "json").stdout)
    return str(pod_b["status"]["podIP"])


def test_a_terminating_pod_leaves_the_mesh_and_no_request_fails(
    kube_cluster: KubeCluster, local_mesh: LocalMesh, local_node: LocalNode, namespace: str
) -> None:
    """Deleting a pod while traffic flows: the mesh drops it at once (its preStop sleep keeps
    it serving meanwhile), the reload keeps the requests in flight, and no request fails."""

    def linger(pod: dict[str, Any]) -> None:
        pod["spec"]["terminationGracePeriodSeconds"] = 10
        pod["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 2}}}

    ip_b = two_routed_pods(kube_cluster, local_mesh, namespace, linger)

    stop = threading.Event()
    answers: Counter[str] = Counter()
    slow: list[str] = []

    def steady() -> None:
        while not stop.is_set():
            answers.update(send(local_mesh, "web.example.com", 5))

    def in_flight() -> None:
        # Requests nginx has passed on before the reload: two land on each pod.
        address, port = local_mesh.listen.rsplit(":", 1)
        conn = http.client.HTTPConnection(address, int(port), timeout=30)
        conn.request("GET", "/sleep/3", headers={"Host": "web.example.com"})
        response = conn.getresponse()
        slow.append(f"{response.status} {response.read().decode()}")
        conn.close()

    # The slow requests first, alone: round-robin gives each pod two of them.
    threads = [threading.Thread(target=in_flight) for _ in range(4)]
    threads += [threading.Thread(target=steady) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    time.sleep(0.3)
    reloads = local_mesh.reloads
    deleted = time.monotonic()
    kube_cluster.kubectl("delete", "pod", "web-b", "-n", namespace, "--wait=false")
    eventually(lambda: ip_b not in local_mesh.config, 30, "web-b out of the mesh config")
    print(f"web-b left the mesh config {time.monotonic() - deleted:.2f}s after its deletion")
    eventually(lambda: get_pod_gone(kube_cluster, namespace, "web-b"), 30, "web-b's object removed")
    stop.set()
    for thread in threads:
        thread.join(30)

    assert local_mesh.reloads > reloads
    assert sorted(slow) == ["200 web-a", "200 web-a", "200 web-b", "200 web-b"]
    assert set(answers) == {"web-a", "web-b"}, answers
    log = (local_node.logs_dir / namespace / "web-b" / "web.log").read_text()
    assert log.index("--- preStop: slept 2s") < log.index("signal 15, shutting down")


def get_pod_gone(cluster: KubeCluster, namespace: str, name: str) -> bool:
    proc = cluster.kubectl("get", "pod", name, "-n", namespace, check=False)
    return proc.returncode != 0 and "NotFound" in proc.stderr


def test_a_pod_that_dies_is_retried_around_until_the_mesh_drops_it(
    kube_cluster: KubeCluster, local_mesh: LocalMesh, local_node: LocalNode, namespace: str
) -> None:
    """A pod whose process dies (no preStop, no warning) refuses connections until its
    readiness is lost and the mesh drops it; meanwhile nginx tries another pod, as Istio's
    default retry does, and no POST or GET sent after the death fails.

    A response the pod was writing when it was killed can be cut mid-body: nginx has
    already passed its headers on, and no proxy can retry a response it has begun to send.
    So only a request sent before the kill may end that way, at most one per client."""

    def no_restart(pod: dict[str, Any]) -> None:
        pod["spec"]["restartPolicy"] = "Never"

    ip_b = two_routed_pods(kube_cluster, local_mesh, namespace, no_restart)

    stop = threading.Event()
    answers: Counter[str] = Counter()
    cut: list[tuple[float, str]] = []  # (when the request was sent, what cut it)

    def steady(method: str) -> None:
        address, port = local_mesh.listen.rsplit(":", 1)
        while not stop.is_set():
            sent = time.monotonic()
            conn = http.client.HTTPConnection(address, int(port), timeout=10)
            try:
                conn.request(method, "/ready", headers={"Host": "web.example.com"})
                response = conn.getresponse()
                response.read()
            except (http.client.IncompleteRead, ConnectionError) as exc:
                cut.append((sent, f"{method} {type(exc).__name__}"))
            else:
                answers[f"{method} {response.status}"] += 1
            finally:
                conn.close()

    threads = [threading.Thread(target=steady, args=(m,)) for m in ("GET", "POST", "POST")]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    pid = int((local_node.logs_dir / namespace / "web-b" / "web.pid").read_text())
    killed = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    eventually(lambda: ip_b not in local_mesh.config, 30, "the dead pod out of the mesh")
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)

    print(f"answers {dict(answers)}; cut while in flight at the kill: {cut}")
    assert set(answers) == {"GET 200", "POST 200"}, answers
    assert all(sent < killed for sent, _ in cut), cut
    assert len(cut) <= len(threads), cut
    assert local_mesh.access_log is not None
    retried = [
        line
        for line in local_mesh.access_log.read_text().splitlines()
        if f"upstream={ip_b}:8080, " in line and "upstream_status=502, 200" in line
    ]
    print(f"{sum(answers.values())} requests, {len(retried)} retried on web-a after web-b died")
    assert retried
