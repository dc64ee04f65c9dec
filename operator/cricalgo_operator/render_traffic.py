"""Pure rendering of Services and the router objects of `traffic.provider`.

- `istio`: a DestinationRule with `stable` / `canary` subsets by the `track` label and a
  VirtualService with one weighted route per track (hosts and gateways from the spec).
- `nginx`: the stable Ingress, plus while a canary runs a canary Ingress carrying
  `nginx.ingress.kubernetes.io/canary: "true"` and `canary-weight`.
- `none`: no router object; the app canary share is a replica ratio (render_scaling).

Both routers publish only `traffic.publicPaths` (by default the deposit webhook alone).
"""

from __future__ import annotations

from typing import Any

from .model import Cad, Manifest
from .naming import Track, canary_ingress_name, selector_labels, service_name
from .render_pods import app_metrics_port, app_port

NGINX_CANARY = "nginx.ingress.kubernetes.io/canary"
NGINX_CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


def public_paths(cad: Cad) -> list[dict[str, str]]:
    """The paths the router publishes (`traffic.publicPaths`, Exact unless told Prefix).

    Only these reach the app from outside: /metrics, /readyz and the users API stay
    inside the cluster unless a CR lists them.
    """
    return [
        {"path": str(p["path"]), "match": str(p.get("match") or "Exact")}
        for p in cad.spec["traffic"]["publicPaths"]
    ]


def render_service(cad: Cad, inputs: dict[str, Any], track: Track | None) -> Manifest:
    """`NAME` selects the app pods of both tracks; `NAME-stable|canary` those of one."""
    ports = [{"name": "http", "port": app_port(inputs), "targetPort": "http", "protocol": "TCP"}]
    if app_metrics_port(inputs) != app_port(inputs):
        ports.append(
            {
                "name": "metrics",
                "port": app_metrics_port(inputs),
                "targetPort": "metrics",
                "protocol": "TCP",
            }
        )
    labels = {"app.kubernetes.io/component": "app"}
    if track is not None:
        labels["track"] = track
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(cad.name, track), "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cad.name, "app", track),
            "ports": ports,
        },
    }


def service_host(cad: Cad) -> str:
    return f"{cad.name}.{cad.namespace}.svc.cluster.local"


def render_destination_rule(cad: Cad) -> Manifest:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": cad.name},
        "spec": {
            "host": service_host(cad),
            "subsets": [
                {"name": track, "labels": {"track": track}} for track in ("stable", "canary")
            ],
        },
    }


def render_virtual_service(cad: Cad, weight: int, port: int) -> Manifest:
    traffic = cad.spec["traffic"]
    spec: dict[str, Any] = {"hosts": list(traffic["hosts"])}
    if traffic["gateways"]:
        spec["gateways"] = list(traffic["gateways"])
    spec["http"] = [
        {
            "name": "primary",
            "match": [
                {"uri": {"exact" if p["match"] == "Exact" else "prefix": p["path"]}}
                for p in public_paths(cad)
            ],
            "route": [
                {
                    "destination": {
                        "host": service_host(cad),
                        "subset": track,
                        "port": {"number": port},
                    },
                    "weight": share,
                }
                for track, share in (("stable", 100 - weight), ("canary", weight))
            ],
        }
    ]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": cad.name},
        "spec": spec,
    }


def render_ingress(cad: Cad, port: int, track: Track, weight: int | None = None) -> Manifest:
    """The stable Ingress (`weight` None) or the canary one carrying `canary-weight`."""
    traffic = cad.spec["traffic"]
    backend = {"service": {"name": service_name(cad.name, track), "port": {"number": port}}}
    paths = [
        {"path": p["path"], "pathType": p["match"], "backend": backend} for p in public_paths(cad)
    ]
    hosts = traffic["hosts"] or [None]
    rules = [{**({"host": host} if host else {}), "http": {"paths": paths}} for host in hosts]
    metadata: dict[str, Any] = {
        "name": cad.name if track == "stable" else canary_ingress_name(cad.name),
        "labels": {"app.kubernetes.io/component": "app", "track": track},
    }
    if track == "canary":
        metadata["annotations"] = {NGINX_CANARY: "true", NGINX_CANARY_WEIGHT: str(weight or 0)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {"ingressClassName": traffic.get("ingressClassName"), "rules": rules},
    }


def render_router(cad: Cad, stable_inputs: dict[str, Any]) -> list[Manifest]:
    """The provider's router objects at the CR's current canary weight."""
    port = app_port(stable_inputs)
    if cad.provider == "istio":
        return [render_destination_rule(cad), render_virtual_service(cad, cad.canary_weight, port)]
    if cad.provider == "nginx":
        objects = [render_ingress(cad, port, "stable")]
        if cad.canary_active:
            objects.append(render_ingress(cad, port, "canary", cad.canary_weight))
        return objects
    return []
