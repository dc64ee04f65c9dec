"""The canary scenario on a kind cluster (`E2E_CLUSTER=kind`), for machines with Docker.

Expected: a running Docker engine, `kind` and `kubectl` on PATH, a kind cluster (name from
`KIND_CLUSTER_NAME`, default `cricalgo` as in kind-config.yaml) with Istio installed
(`istioctl install --set profile=default`: the `istio-ingressgateway` Service in
`istio-system`). What this module does that the local stack does not need:

- builds `cricalgo/workload` with docker once and loads it into the nodes under each tag the
  scenario uses (`kind load docker-image`): on the local stack the node maps the image name
  to the console script;
- deploys Redis, PostgreSQL and a Prometheus (the local stack's pod-discovery job, in-cluster)
  into the scenario's namespace, from public images;
- sends webhook traffic through an Istio Gateway on the ingress gateway, and reaches
  PostgreSQL and Prometheus from this machine, through `kubectl port-forward`;
- reads a pod's metrics through the API server's pod proxy (pod IPs are not routable here).

The manifests are rendered by pure functions below; `KindCluster` applies them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .binaries import prometheus_release
from .clusters import ClusterUnavailable, run
from .processes import ManagedProcess, free_port
from .services import render_pod_discovery
from .stack import project_crds

REPO = Path(__file__).resolve().parents[2]
WORKLOAD_DOCKERFILE = REPO / "workload" / "Dockerfile"
REDIS_IMAGE = "redis:7.4-alpine"
POSTGRES_IMAGE = "postgres:16-alpine"
# The release the local stack builds, so both run the same Prometheus.
PROMETHEUS_IMAGE = f"prom/prometheus:v{prometheus_release()}"
GATEWAY = "payments-gateway"
INGRESS = ("istio-system", "istio-ingressgateway")


def missing_tools() -> list[str]:
    """What of docker (with a running engine), kind and kubectl this machine lacks."""
    missing = [tool for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if "docker" not in missing:
        engine = subprocess.run(["docker", "info"], capture_output=True, check=False)
        if engine.returncode != 0:
            missing.append("a running Docker engine")
    return missing


def render_backing_services(namespace: str) -> list[dict[str, Any]]:
    """Redis and PostgreSQL (trust auth, no volume: a scenario's data is thrown away)."""

    def server(name: str, image: str, port: int, env: list[dict[str, str]]) -> list[dict[str, Any]]:
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "cricalgo-e2e"}
        container = {
            "name": name,
            "image": image,
            "env": env,
            "ports": [{"containerPort": port}],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2},
        }
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [container]},
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]},
            },
        ]

    trust = [{"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"}]
    return [
        *server("redis", REDIS_IMAGE, 6379, []),
        *server("postgres", POSTGRES_IMAGE, 5432, trust),
    ]


def render_prometheus(namespace: str, scrape_interval: str = "5s") -> list[dict[str, Any]]:
    """A Prometheus discovering the namespace's pods with the local stack's scrape job (same
    relabelling: `track`, `version`, `app`, `component`), so the operator's queries match."""
    job = render_pod_discovery("", "", "", "")
    job["kubernetes_sd_configs"] = [{"role": "pod", "namespaces": {"names": [namespace]}}]
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [job],
    }
    labels = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/part-of": "cricalgo-e2e"}
    meta = {"name": "prometheus", "namespace": namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "prometheus",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"prometheus.yml": yaml.safe_dump(config, sort_keys=False)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "prometheus",
                        "containers": [
                            {
                                "name": "prometheus",
                                "image": PROMETHEUS_IMAGE,
                                "args": ["--config.file=/etc/prometheus/prometheus.yml"],
                                "ports": [{"containerPort": 9090}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/-/ready", "port": 9090},
                                    "periodSeconds": 2,
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/prometheus"}
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "prometheus"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"port": 9090, "targetPort": 9090}]},
        },
    ]


def render_gateway(namespace: str, host: str) -> dict[str, Any]:
    """An Istio Gateway on the default ingress gateway for `host`, plain HTTP on port 80."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": namespace},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [host]}
            ],
        },
    }


def _wait_port(port: int, process: ManagedProcess, timeout: float = 30) -> None:
    def open_() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    process.wait_ready(open_, timeout)


class KindCluster:
    """A kind cluster the scenario runs on; see the module docstring for what it expects."""

    name = "kind"

    def __init__(self, cluster: str, kubeconfig: Path, work_dir: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.work_dir = work_dir
        self.kubectl = [str(shutil.which("kubectl")), f"--kubeconfig={kubeconfig}"]
        self.access_log: Path | None = None
        self.namespace = ""
        self._forwards: dict[str, tuple[ManagedProcess, int]] = {}
        self._pids: dict[str, int] = {}
        self._api: Any = None

    @classmethod
    def connect(cls, work_dir: Path) -> KindCluster:
        """The kind cluster `KIND_CLUSTER_NAME` names, with Istio and the project's CRDs;
        ClusterUnavailable says what is missing."""
        missing = missing_tools()
        if missing:
            raise ClusterUnavailable(f"E2E_CLUSTER=kind needs {', '.join(missing)}; not found here")
        cluster = os.environ.get("KIND_CLUSTER_NAME", "cricalgo")
        work_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = work_dir / "kind.kubeconfig"
        try:
            kubeconfig.write_text(
                run(["kind", "get", "kubeconfig", "--name", cluster], f"kind cluster {cluster}")
            )
        except RuntimeError as err:
            raise ClusterUnavailable(
                f"{err} (create it: kind create cluster --config kind-config.yaml)"
            ) from None
        kind = cls(cluster, kubeconfig, work_dir)
        ingress_ns, ingress = INGRESS
        try:
            kind.k("get", "service", ingress, "-n", ingress_ns)
        except RuntimeError:
            raise ClusterUnavailable(
                f"Istio's {ingress_ns}/{ingress} is not installed on kind cluster {cluster} "
                "(istioctl install --set profile=default)"
            ) from None
        for crd in project_crds():
            kind.k("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        return kind

    def k(self, *args: str, input: str | None = None) -> str:
        return run([*self.kubectl, *args], f"kubectl {' '.join(args[:3])}", input=input)

    def _apply(self, manifests: Sequence[Mapping[str, Any]]) -> None:
        text = yaml.safe_dump_all(list(manifests), sort_keys=False)
        self.k("apply", "--server-side", "--force-conflicts", "-f", "-", input=text)

    def prepare(self, namespace: str, images: Sequence[str]) -> None:
        self.namespace = namespace
        self.load_images(images)
        self._apply(render_backing_services(namespace) + render_prometheus(namespace))
        self._apply([render_gateway(namespace, "*")])
        for name in ("redis", "postgres", "prometheus"):
            self.k("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=180s")
        self._forward("postgres", namespace, "service/postgres", 5432)
        self._forward("prometheus", namespace, "service/prometheus", 9090)
        self._forward("mesh", INGRESS[0], f"service/{INGRESS[1]}", 80)

    def load_images(self, images: Sequence[str]) -> None:
        """Build the workload image once, tag it as each of `images`, load them into kind.
        The scenario's versions differ only by tag, as on the local stack."""
        first, *others = images
        run(
            ["docker", "build", "-f", str(WORKLOAD_DOCKERFILE), "-t", first, str(REPO)],
            f"docker build {first}",
        )
        for image in others:
            run(["docker", "tag", first, image], f"docker tag {image}")
        run(
            ["kind", "load", "docker-image", "--name", self.cluster, *images],
            "kind load docker-image",
        )

    def _forward(self, name: str, namespace: str, target: str, port: int) -> None:
        local = free_port()
        process = ManagedProcess(
            f"port-forward {name}",
            [*self.kubectl, "port-forward", "-n", namespace, target, f"{local}:{port}"],
            self.work_dir / f"port-forward-{name}.log",
        )
        process.start()
        _wait_port(local, process)
        self._forwards[name] = (process, local)

    def _local_port(self, name: str) -> int:
        if name not in self._forwards:
            raise RuntimeError(f"the {name} port-forward is not running (call prepare first)")
        return self._forwards[name][1]

    def mesh_url(self) -> str:
        return f"http://127.0.0.1:{self._local_port('mesh')}"

    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self._local_port('prometheus')}"

    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self._local_port('postgres')}/postgres"

    def pod_dsn(self, database: str) -> str:
        return f"postgresql://postgres@postgres.{self.namespace}.svc.cluster.local:5432/{database}"

    def pod_redis_url(self) -> str:
        return f"redis://redis.{self.namespace}.svc.cluster.local:6379/0"

    def traffic(self, host: str) -> dict[str, Any]:
        return {"provider": "istio", "hosts": [host], "gateways": [f"{self.namespace}/{GATEWAY}"]}

    def pod_metrics(self, pod: Mapping[str, Any], port: int) -> str | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from .kube_api import api_client

        if self._api is None:
            self._api = client.CoreV1Api(api_client(self.kubeconfig))
        meta = pod["metadata"]
        try:
            text: str = self._api.connect_get_namespaced_pod_proxy_with_path(
                f"{meta['name']}:{port}", meta["namespace"], "metrics"
            )
        except ApiException:
            return None
        return text

    def record_process(self, name: str, pid: int) -> None:
        self._pids[name] = pid

    def recorded_pid(self, name: str) -> int | None:
        return self._pids.get(name)

    def close(self) -> None:
        for process, _ in self._forwards.values():
            process.stop()
        self._forwards.clear()
        # The scenario's namespace goes with what it deployed; the cluster stays.
        if self.namespace:
            subprocess.run(
                [*self.kubectl, "delete", "namespace", self.namespace, "--wait=false"],
                capture_output=True,
                check=False,
            )
