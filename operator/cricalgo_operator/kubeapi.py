"""A small async Kubernetes API client: server-side apply, get, list, delete, status, events.

Only the kinds the operator manages are known (RESOURCES); paths are built from that
table, so no discovery round-trips. Every write goes through this client under the one
field manager `cricalgo-operator`, and `writes` counts them (benchmarks report it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import kopf

from . import metrics
from .connection import ssl_context
from .naming import FIELD_MANAGER

Manifest = dict[str, Any]

# (apiVersion, kind) -> plural. All are namespaced.
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "Ingress"): "ingresses",
    ("networking.istio.io/v1", "VirtualService"): "virtualservices",
    ("networking.istio.io/v1", "DestinationRule"): "destinationrules",
    ("cricalgo.io/v1alpha1", "CricAlgoDeployment"): "cricalgodeployments",
}
KIND_VERSIONS: dict[str, str] = {kind: version for (version, kind) in RESOURCES}


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in (409, 429) or self.status >= 500


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = RESOURCES[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


@dataclass
class KubeApi:
    """Async client bound to one server and identity. Create it inside the event loop."""

    http: httpx.AsyncClient
    writes: int = 0

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo, timeout: float = 30.0) -> KubeApi:
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"Bearer {info.token}"
        http = httpx.AsyncClient(
            base_url=info.server,
            verify=ssl_context(info),
            headers=headers,
            # Requests queue for a connection without a deadline (pool=None): under a
            # burst of CRs that is back-pressure, not an error; each request still has
            # `timeout` once sent.
            timeout=httpx.Timeout(timeout, pool=None),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        return cls(http)

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        content = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else None
        if method != "GET":
            self.writes += 1
            metrics.api_writes.labels(method).inc()
        response = await self.http.request(
            method, path, params=params, content=content, headers=headers
        )
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message)
        return response.json() if response.content else None

    async def apply(self, manifest: Manifest, *, force: bool = True) -> Manifest:
        """Server-side apply under our field manager.

        `force` takes back fields we declare that someone else changed (drift repair);
        fields we never declare (replicas under an HPA, user labels) stay theirs.
        """
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        result: Manifest = await self._request(
            "PATCH", path, params=params, body=manifest, content_type="application/apply-patch+yaml"
        )
        return result

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            result: Manifest = await self._request(
                "GET", resource_path(api_version, kind, namespace, name)
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    async def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[Manifest]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request(
            "GET", resource_path(api_version, kind, namespace), params=params
        )
        return list(result.get("items") or [])

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete if present; returns whether something was deleted."""
        try:
            await self._request(
                "DELETE",
                resource_path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> Manifest:
        """JSON merge patch of an object itself (metadata, spec); not its status.

        Unlike `apply`, it takes no ownership of the fields it sets: for one-shot writes
        such as the control annotations, which their writer or the operator deletes.
        """
        result: Manifest = await self._request(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def patch_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> Manifest:
        """JSON merge patch of the status subresource (lists are replaced whole).

        With `resource_version` the patch only lands on that exact version (else 409),
        so a writer working from a stale read cannot clobber a newer status.
        """
        path = resource_path(api_version, kind, namespace, name) + "/status"
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        result: Manifest = await self._request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )
        return result

    async def create(self, manifest: Manifest) -> Manifest:
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        result: Manifest = await self._request("POST", path, body=manifest)
        return result
