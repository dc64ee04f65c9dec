"""The local mesh's routing, as pure functions: Kubernetes and Istio objects in, nginx
configuration out.

Sources, as the operator writes them:
- Istio: a VirtualService's `http[].route[]` destinations (host, subset, port, weight), the
  subsets' labels from the DestinationRule for that host;
- NGINX ingress: an Ingress per host and path, plus a canary Ingress annotated
  `nginx.ingress.kubernetes.io/canary: "true"` with `canary-weight` (of `canary-weight-total`).

Endpoints are the ready pods a Service selects (plus the subset's labels), not
EndpointSlices: the API server rejects loopback addresses in EndpointSlices, and every pod
of the local node has one.

Weights are exact: each upstream server's nginx weight makes its subset's share of requests
equal to the route weight, and nginx's smooth weighted round-robin is deterministic (one
worker), so 1,000 requests at 90/10 are 900/100. A share whose subset has no ready pod goes
to a server that answers 503 "no healthy upstream", as Envoy does.

Retries follow the source: a VirtualService's `http[].retries` (Istio's default when absent),
an Ingress gets ingress-nginx's default (see `RetryPolicy`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CANARY = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
CANARY_WEIGHT_TOTAL = "nginx.ingress.kubernetes.io/canary-weight-total"

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Backend:
    """One weighted destination of a route and the `ip:port` of its ready pods."""

    name: str
    weight: int
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class RetryPolicy:
    """When nginx passes a failed request to another server of the route, and how often.

    `conditions` are `proxy_next_upstream` values (empty: never); `tries` counts the first
    attempt; `non_idempotent` lets a POST be retried once it was sent, as Envoy does.
    """

    conditions: tuple[str, ...]
    tries: int
    non_idempotent: bool
    per_try_timeout: str | None = None


# Istio's default (attempts 2; connect-failure, refused-stream, ...) as far as nginx can say it:
# `error` is a refused or reset connection. Envoy retries POSTs too. Istio also retries an
# upstream 503; the mesh does not, because nginx would then retry the 503 of a subset with no
# ready pod on another subset (Envoy answers it 503), hiding the failure a canary must show.
ISTIO_DEFAULT_RETRIES = RetryPolicy(("error",), tries=3, non_idempotent=True)
# ingress-nginx's default: `proxy-next-upstream: error timeout`, 3 tries, no POST once sent.
INGRESS_NGINX_RETRIES = RetryPolicy(("error", "timeout"), tries=3, non_idempotent=False)
NO_RETRIES = RetryPolicy((), tries=1, non_idempotent=False)

# Istio `retryOn` tokens -> nginx `proxy_next_upstream` conditions (gRPC ones have none).
_RETRY_ON = {
    "connect-failure": ("error",),
    "refused-stream": ("error",),
    "reset": ("error",),
    "reset-before-request": ("error",),
    "5xx": ("error", "timeout", "http_500", "http_502", "http_503", "http_504"),
    "gateway-error": ("error", "timeout", "http_502", "http_503", "http_504"),
    "retriable-4xx": ("http_429",),
    "retriable-status-codes": ("http_503",),
}
_STATUS_CONDITIONS = {"403", "404", "429", "500", "502", "503", "504"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_MILLISECONDS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def retry_policy(retries: Obj | None) -> RetryPolicy:
    """nginx's retry policy for an Istio `HTTPRetry` (None: Istio's default; a `retryOn`
    left out means connect failures, as in the default).

    Raises ValueError for a `perTryTimeout` that is not an Istio duration.
    """
    if retries is None:
        return ISTIO_DEFAULT_RETRIES
    attempts = int(retries.get("attempts", 0))
    if attempts <= 0:
        return NO_RETRIES
    conditions: list[str] = []
    for token in str(retries.get("retryOn") or "connect-failure,refused-stream").split(","):
        token = token.strip()
        found = _RETRY_ON.get(token) or ((f"http_{token}",) if token in _STATUS_CONDITIONS else ())
        conditions += [c for c in found if c not in conditions]
    timeout = retries.get("perTryTimeout")
    if timeout is not None:
        match = _DURATION.match(str(timeout))
        if match is None:
            raise ValueError(f"perTryTimeout {timeout!r} is not a duration like 2s or 500ms")
        if "timeout" not in conditions:
            conditions.append("timeout")
        timeout = f"{max(1, round(float(match[1]) * _MILLISECONDS[match[2]]))}ms"
    if not conditions:
        return NO_RETRIES
    return RetryPolicy(
        tuple(conditions), attempts + 1, non_idempotent=True, per_try_timeout=timeout
    )


@dataclass(frozen=True)
class Route:
    path: str
    exact: bool
    backends: tuple[Backend, ...]
    retries: RetryPolicy = ISTIO_DEFAULT_RETRIES


@dataclass(frozen=True)
class HostRoutes:
    host: str
    source: str
    routes: tuple[Route, ...]


@dataclass
class MeshObjects:
    """Everything the mesh reads from the API server."""

    virtual_services: list[Obj] = field(default_factory=list)
    destination_rules: list[Obj] = field(default_factory=list)
    ingresses: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def pod_ready(pod: Obj) -> bool:
    """Ready, with an IP, and not terminating (Kubernetes takes those out of endpoints)."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def _target_port(service_port: Obj, pod: Obj) -> int | None:
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def _service_port(service: Obj, number: int | None, name: str | None = None) -> Obj | None:
    ports = service["spec"].get("ports") or []
    for port in ports:
        if (number is not None and port["port"] == number) or (name and port.get("name") == name):
            return port
    if number is None and name is None and len(ports) == 1:
        return ports[0]
    return None


def service_endpoints(
    service: Obj,
    pods: Sequence[Obj],
    port_number: int | None,
    port_name: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """`ip:port` of the ready pods the Service selects (and that carry `extra_labels`)."""
    selector = service["spec"].get("selector") or {}
    if not selector:
        return ()
    wanted = {**selector, **(extra_labels or {})}
    port = _service_port(service, port_number, port_name)
    if port is None:
        return ()
    namespace = service["metadata"]["namespace"]
    endpoints = set()
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if pod["metadata"]["namespace"] != namespace or not pod_ready(pod):
            continue
        if any(labels.get(k) != v for k, v in wanted.items()):
            continue
        target = _target_port(port, pod)
        if target is not None:
            endpoints.add(f"{pod['status']['podIP']}:{target}")
    return tuple(sorted(endpoints))


def _resolve_host(host: str, namespace: str) -> tuple[str, str]:
    """Istio's short names: `app`, `app.ns`, `app.ns.svc.cluster.local` -> (ns, app)."""
    parts = host.split(".")
    if len(parts) == 2 or (len(parts) > 2 and parts[2] == "svc"):
        return parts[1], parts[0]
    return namespace, parts[0]


def _subset_labels(
    rules: Sequence[Obj], namespace: str, service: str, subset: str
) -> dict[str, str] | None:
    for rule in sorted(rules, key=_key):
        if _resolve_host(rule["spec"].get("host", ""), rule["metadata"]["namespace"]) != (
            namespace,
            service,
        ):
            continue
        for entry in rule["spec"].get("subsets") or []:
            if entry.get("name") == subset:
                return dict(entry.get("labels") or {})
    return None


def _match_path(match: Obj) -> tuple[str, bool] | None:
    """A match the mesh can express as an nginx location, or None (headers, methods ...)."""
    if set(match) - {"uri", "name"}:
        return None
    uri = match.get("uri") or {"prefix": "/"}
    if "prefix" in uri:
        return str(uri["prefix"]), False
    if "exact" in uri:
        return str(uri["exact"]), True
    return None


def virtual_service_routes(objects: MeshObjects) -> list[HostRoutes]:
    """One HostRoutes per host of every VirtualService (first one wins a shared host)."""
    services = {_key(s): s for s in objects.services}
    result: list[HostRoutes] = []
    for vs in sorted(objects.virtual_services, key=_key):
        namespace, name = _key(vs)
        routes: list[Route] = []
        for http in vs["spec"].get("http") or []:
            destinations = http.get("route") or []
            backends = []
            for dest in destinations:
                target = dest["destination"]
                svc_ns, svc_name = _resolve_host(target["host"], namespace)
                weight = int(dest.get("weight", 100 if len(destinations) == 1 else 0))
                subset = target.get("subset")
                labels: dict[str, str] | None = {}
                if subset:
                    labels = _subset_labels(objects.destination_rules, svc_ns, svc_name, subset)
                service = services.get((svc_ns, svc_name))
                port = (target.get("port") or {}).get("number")
                endpoints: tuple[str, ...] = ()
                if service is not None and labels is not None:
                    endpoints = service_endpoints(service, objects.pods, port, None, labels)
                label = f"{svc_ns}/{svc_name}" + (f" subset {subset}" if subset else "")
                backends.append(Backend(label, weight, endpoints))
            retries = retry_policy(http.get("retries"))
            for match in http.get("match") or [{}]:
                path = _match_path(match)
                if path is not None:
                    routes.append(Route(path[0], path[1], tuple(backends), retries))
        for host in vs["spec"].get("hosts") or []:
            if host != "*":
                result.append(HostRoutes(host, f"VirtualService {namespace}/{name}", tuple(routes)))
    return result


def _canary_weight(ingress: Obj) -> tuple[int, int]:
    annotations = ingress["metadata"].get("annotations") or {}
    total = int(annotations.get(CANARY_WEIGHT_TOTAL, 100))
    return int(annotations.get(CANARY_WEIGHT, 0)), total


def ingress_routes(objects: MeshObjects) -> list[HostRoutes]:
    """Routes of Ingresses, with nginx-ingress canary Ingresses splitting by weight."""
    services = {_key(s): s for s in objects.services}
    primary: dict[tuple[str, str, bool], tuple[Obj, Obj]] = {}
    canary: dict[tuple[str, str, bool], tuple[Obj, Obj]] = {}
    for ingress in sorted(objects.ingresses, key=_key):
        is_canary = (ingress["metadata"].get("annotations") or {}).get(CANARY) == "true"
        for rule in ingress["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                key = (rule.get("host", ""), path.get("path", "/"), path.get("pathType") == "Exact")
                (canary if is_canary else primary).setdefault(key, (ingress, path["backend"]))

    def backend(ingress: Obj, ref: Obj, weight: int) -> Backend:
        namespace = ingress["metadata"]["namespace"]
        svc_ref = ref.get("service") or {}
        port = svc_ref.get("port") or {}
        service = services.get((namespace, svc_ref.get("name", "")))
        endpoints: tuple[str, ...] = ()
        if service is not None:
            endpoints = service_endpoints(
                service, objects.pods, port.get("number"), port.get("name")
            )
        return Backend(f"{namespace}/{svc_ref.get('name')}", weight, endpoints)

    by_host: dict[str, list[Route]] = {}
    sources: dict[str, str] = {}
    for (host, path, exact), (ingress, ref) in sorted(primary.items()):
        if not host:
            continue
        split = canary.get((host, path, exact))
        weight, total = _canary_weight(split[0]) if split else (0, 100)
        weight = max(0, min(weight, total))
        backends = [backend(ingress, ref, total - weight)]
        if split and weight:
            backends.append(backend(split[0], split[1], weight))
        route = Route(path, exact, tuple(backends), INGRESS_NGINX_RETRIES)
        by_host.setdefault(host, []).append(route)
        sources.setdefault(host, "Ingress {}/{}".format(*_key(ingress)))
    return [HostRoutes(h, sources[h], tuple(r)) for h, r in sorted(by_host.items())]


def endpoint_weights(backends: Sequence[Backend], no_endpoints: str) -> list[tuple[str, int]]:
    """nginx `server` weights giving each backend exactly its route weight's share.

    A backend of n endpoints and weight w gives each endpoint w * L / n, L being the least
    common multiple of the n's; then all weights are divided by their gcd. Weight-0
    backends are left out; a weighted backend without endpoints sends its share to
    `no_endpoints`.
    """
    live = [b for b in backends if b.weight > 0]
    if not live:
        return []
    lcm = math.lcm(*(max(1, len(b.endpoints)) for b in live))
    weights: dict[str, int] = {}
    for b in live:
        targets = b.endpoints or (no_endpoints,)
        for endpoint in targets:
            weights[endpoint] = weights.get(endpoint, 0) + b.weight * lcm // len(targets)
    divisor = math.gcd(*weights.values())
    return [(endpoint, weight // divisor) for endpoint, weight in sorted(weights.items())]


def render_retries(policy: RetryPolicy) -> list[str]:
    """The nginx directives of a retry policy (inside a `location`)."""
    if not policy.conditions:
        return ["proxy_next_upstream off;"]
    conditions = [*policy.conditions, *(["non_idempotent"] if policy.non_idempotent else [])]
    lines = [
        f"proxy_next_upstream {' '.join(conditions)};",
        f"proxy_next_upstream_tries {policy.tries};",
    ]
    if policy.per_try_timeout:
        lines.append(f"proxy_read_timeout {policy.per_try_timeout};")
    return lines


def _upstream_name(host: str, index: int) -> str:
    return f"mesh_{re.sub(r'[^A-Za-z0-9]', '_', host)}_{index}"


def render_nginx(
    hosts: Sequence[HostRoutes], listen: str, no_endpoints: str, access_log: str | None = None
) -> str:
    """The body of nginx's http block: one upstream per route, one server per host."""
    lines = [
        "# Generated by the CricAlgo local mesh from VirtualServices and Ingresses.",
        "log_format cricalgo_mesh '$time_iso8601 host=$host status=$status "
        "upstream=$upstream_addr upstream_status=$upstream_status "
        'duration=$request_time "$request"\';',
        "server {",
        f"    listen {no_endpoints};",
        '    location / { return 503 "no healthy upstream\\n"; }',
        "}",
        "server {",
        f"    listen {listen} default_server;",
        '    location / { return 404 "no route for host $host\\n"; }',
        "}",
    ]
    seen: set[str] = set()
    for host in hosts:
        if host.host in seen:
            lines.append(f"# {host.source}: host {host.host} already routed above; ignored")
            continue
        seen.add(host.host)
        server = ["server {", f"    listen {listen};", f"    server_name {host.host};"]
        if access_log:
            server.append(f"    access_log {access_log} cricalgo_mesh;")
        locations: set[tuple[str, bool]] = set()
        for index, route in enumerate(host.routes):
            if (route.path, route.exact) in locations:
                continue
            locations.add((route.path, route.exact))
            weights = endpoint_weights(route.backends, no_endpoints)
            shares = ", ".join(f"{b.name} {b.weight}%" for b in route.backends)
            location = f"= {route.path}" if route.exact else route.path
            if not weights:
                server += [
                    f"    # {host.source}: {shares or 'no destinations'}",
                    f'    location {location} {{ return 503 "no healthy upstream\\n"; }}',
                ]
                continue
            upstream = _upstream_name(host.host, index)
            lines += [
                f"# {host.source} {host.host} {route.path}: {shares}",
                f"upstream {upstream} {{",
            ]
            lines += [f"    server {e} weight={w} max_fails=0;" for e, w in weights]
            lines.append("}")
            server += [
                f"    location {location} {{",
                f"        proxy_pass http://{upstream};",
                "        proxy_set_header Host $host;",
                "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                "        proxy_http_version 1.1;",
                *(f"        {line}" for line in render_retries(route.retries)),
                "        add_header X-Cricalgo-Upstream $upstream_addr always;",
                "    }",
            ]
        if ("/", False) not in locations:
            server.append('    location / { return 404 "no route for this path\\n"; }')
        lines += [*server, "}"]
    return "\n".join(lines) + "\n"


def render_mesh_config(
    objects: MeshObjects, listen: str, no_endpoints: str, access_log: str | None = None
) -> str:
    """The whole mesh: VirtualService hosts first, then Ingress hosts not already routed."""
    hosts = virtual_service_routes(objects) + ingress_routes(objects)
    return render_nginx(hosts, listen, no_endpoints, access_log)
