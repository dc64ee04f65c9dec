"""Pure rendering of the app and worker Deployments (one per component and track).

Pods run the workload's console script `cricalgo-workload webhook|worker`; everything
they need comes from the environment (see `pod_env`).
"""

from __future__ import annotations

from typing import Any

from .model import Cad, Manifest
from .naming import Component, Track, image_version, selector_labels, workload_name

ROLE = {"app": "webhook", "worker": "worker"}
DEFAULT_RESOURCES: dict[str, Any] = {
    # The HPA's CPU target is a percentage of the request, so there must be one.
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
TERMINATION_GRACE = {"app": 30, "worker": 60}  # workers finish an in-flight deposit
# A terminating app pod keeps serving this long before SIGTERM: endpoint removal reaches
# the mesh and kube-proxy asynchronously, and requests routed meanwhile must not fail.
PRE_STOP_SLEEP_SECONDS = 5
RUN_AS = 10001


def app_metrics_port(inputs: dict[str, Any]) -> int:
    app = inputs.get("app") or {}
    return int(app.get("metricsPort") or app.get("port") or 8000)


def app_port(inputs: dict[str, Any]) -> int:
    return int((inputs.get("app") or {}).get("port") or 8000)


def pre_stop_seconds(inputs: dict[str, Any]) -> int:
    """`app.preStopSleepSeconds` (unset: the default; 0: no preStop hook)."""
    seconds = (inputs.get("app") or {}).get("preStopSleepSeconds")
    return PRE_STOP_SLEEP_SECONDS if seconds is None else int(seconds)


def worker_metrics_port(inputs: dict[str, Any]) -> int:
    return int((inputs.get("worker") or {}).get("metricsPort") or 9191)


def pod_env(inputs: dict[str, Any], component: Component, track: Track) -> list[dict[str, Any]]:
    """User env first, then the operator's own variables (which win on a name clash)."""
    database = inputs.get("database") or {}
    redis = inputs.get("redis") or {}
    worker = inputs.get("worker") or {}
    ours: list[dict[str, Any]] = [
        {"name": "CRICALGO_TRACK", "value": track},
        {"name": "CRICALGO_VERSION", "value": image_version(inputs["image"])},
        {"name": "CRICALGO_ROLE", "value": ROLE[component]},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": _secret_ref(database, "dsn")}},
        {"name": "DB_POOL_SIZE", "value": str(database.get("poolSize", 1))},
        {"name": "DB_MAX_OVERFLOW", "value": str(database.get("maxOverflow", 1))},
        {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": _secret_ref(redis, "url")}},
    ]
    # Names as the workload reads them (cricalgo_workload.settings). Each pod binds its
    # own IP: on the local stack every pod is a process with its own loopback address.
    ours.append({"name": "CRICALGO_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    queues = list(worker.get("queues") or ["deposits"])
    # The webhook (and the worker's relay) send to the first queue; workers consume all.
    ours.append({"name": "CRICALGO_QUEUE", "value": queues[0]})
    if component == "app":
        ours.append({"name": "CRICALGO_PORT", "value": str(app_port(inputs))})
        if app_metrics_port(inputs) != app_port(inputs):
            # /metrics moves there (the scrape annotation points at it); otherwise the
            # webhook serves it on its own port.
            ours.append(
                {"name": "CRICALGO_WEBHOOK_METRICS_PORT", "value": str(app_metrics_port(inputs))}
            )
        webhook = inputs.get("webhook") or {}
        if webhook.get("secretRef"):
            ours.append(
                {
                    "name": "CRICALGO_WEBHOOK_SECRET",
                    "valueFrom": {"secretKeyRef": _secret_ref(webhook, "secret")},
                }
            )
    else:
        ours += [
            {"name": "CRICALGO_METRICS_PORT", "value": str(worker_metrics_port(inputs))},
            {"name": "CRICALGO_QUEUES", "value": " ".join(queues)},
            {"name": "CRICALGO_WORKER_THREADS", "value": str(worker.get("concurrency", 4))},
        ]
    taken = {e["name"] for e in ours}
    # Server-side apply merges env by name, so a duplicate would be rejected outright.
    user = [dict(e) for e in inputs.get("env") or [] if e.get("name") not in taken]
    return user + ours


def _secret_ref(section: dict[str, Any], default_key: str) -> dict[str, Any]:
    ref = section.get("secretRef") or {}
    return {"name": ref.get("name", ""), "key": ref.get("key") or default_key}


def _probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container_ports(inputs: dict[str, Any], component: Component) -> list[dict[str, Any]]:
    if component == "worker":
        return [
            {"name": "metrics", "containerPort": worker_metrics_port(inputs), "protocol": "TCP"}
        ]
    ports = [{"name": "http", "containerPort": app_port(inputs), "protocol": "TCP"}]
    if app_metrics_port(inputs) != app_port(inputs):
        ports.append(
            {"name": "metrics", "containerPort": app_metrics_port(inputs), "protocol": "TCP"}
        )
    return ports


def render_pod_template(
    cad: Cad, component: Component, track: Track, inputs: dict[str, Any], revision: str
) -> dict[str, Any]:
    """The pod template of one component and track, from its pod inputs."""
    probe_port = "http" if component == "app" else "metrics"
    metrics_port = app_metrics_port(inputs) if component == "app" else worker_metrics_port(inputs)
    labels = {
        **selector_labels(cad.name, component, track),
        "app.kubernetes.io/part-of": "cricalgo",
        "version": image_version(inputs["image"]),
    }
    container: dict[str, Any] = {
        "name": component,
        "image": inputs["image"],
        "imagePullPolicy": inputs.get("imagePullPolicy", "IfNotPresent"),
        "command": ["cricalgo-workload"],
        "args": [ROLE[component]],
        "env": pod_env(inputs, component, track),
        "ports": container_ports(inputs, component),
        "resources": inputs.get("resources") or DEFAULT_RESOURCES,
        "livenessProbe": _probe("/healthz", probe_port, 10, 3),
        "readinessProbe": _probe("/readyz", probe_port, 5, 3),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    grace = TERMINATION_GRACE[component]
    if component == "app" and pre_stop_seconds(inputs) > 0:
        # The sleep runs inside the grace period, so the drain keeps its whole budget.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop_seconds(inputs)}}}
        grace += pre_stop_seconds(inputs)
    return {
        "metadata": {
            "labels": labels,
            "annotations": {
                "cricalgo.io/revision": revision,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(metrics_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "serviceAccountName": cad.name,
            # The workload never talks to the Kubernetes API.
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": grace,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def render_deployment(
    cad: Cad,
    component: Component,
    track: Track,
    inputs: dict[str, Any],
    revision: str,
    replicas: int | None,
) -> Manifest:
    """A Deployment; `replicas` is None when an HPA owns the count (then it is not set)."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(cad.name, component, track)},
        "revisionHistoryLimit": 5,
        "strategy": {
            "type": "RollingUpdate",
            # Payments: never drop below the current capacity during a rollout.
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": render_pod_template(cad, component, track, inputs, revision),
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": workload_name(cad.name, component, track),
            "labels": {"app.kubernetes.io/component": component, "track": track},
        },
        "spec": spec,
    }
