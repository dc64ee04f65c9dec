"""The operator's Kubernetes API access: a thin adapter over lightkube's AsyncClient.

Manifests stay plain dicts on both sides (rendering is pure and knows no client). The
kinds the operator manages are known up front (RESOURCES), so there are no discovery
round-trips. Every write goes through `apply`, `patch`, `patch_status`, `create` or
`delete`, under the one field manager `cricalgo-operator`, and `writes` counts them
(benchmarks report it). Library errors become `ApiError` (HTTP status + message), so
callers branch on `error.status` without knowing the library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import kopf
import msgspec
from lightkube import ApiError as LibraryError
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import CascadeType, PatchType

from . import metrics
from .connection import load_connection, token_file
from .naming import FIELD_MANAGER

Manifest = dict[str, Any]

# The transport's failures (connection refused, timeouts): "not yet", never permanent.
TransportError = httpx2.TransportError

# (apiVersion, kind) -> plural. All are namespaced.
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("v1", "Secret"): "secrets",  # credentials a CR names; the stable env (stable_env.py)
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",  # the canary's migration (migrations.py)
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "Ingress"): "ingresses",
    ("networking.istio.io/v1", "VirtualService"): "virtualservices",
    ("networking.istio.io/v1", "DestinationRule"): "destinationrules",
    ("cricalgo.io/v1alpha1", "CricAlgoDeployment"): "cricalgodeployments",
}
KIND_VERSIONS: dict[str, str] = {kind: version for (version, kind) in RESOURCES}


def resource_class(api_version: str, kind: str) -> Any:
    """lightkube's class for a kind: its own model for built-in kinds, generic otherwise."""
    plural = RESOURCES[(api_version, kind)]
    group, _, version = api_version.rpartition("/")
    if "." in group and not group.endswith(".k8s.io"):
        # Custom resources (Istio's, ours): dict-like generic classes, registered once.
        return create_namespaced_resource(group, version, kind, plural)
    return resource_registry.load(api_version, kind)


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in (409, 429) or self.status >= 500

    @classmethod
    def from_library(cls, error: LibraryError) -> ApiError:
        return cls(int(error.status.code or 0), str(error.status.message or error))


def _as_dict(obj: Any) -> Manifest:
    """A response as a plain dict (lightkube returns models for built-in kinds)."""
    if isinstance(obj, dict):
        return dict(obj)
    result: Manifest = msgspec.to_builtins(obj)
    return result


def _labels(selector: Mapping[str, str] | None) -> dict[str, Any] | None:
    return dict(selector) if selector else None


@dataclass
class KubeApi:
    """Async client bound to one server and identity. Create it inside the event loop."""

    client: AsyncClient
    writes: int = 0

    @classmethod
    def from_connection(
        cls, info: kopf.ConnectionInfo, *, token_file: str | None = None, timeout: float = 30.0
    ) -> KubeApi:
        """A client acting as `info`'s identity.

        TLS comes from Kopf's own `ConnectionInfo.as_ssl_context` (the client key is an
        in-memory file, see `connection`). With `token_file`, lightkube re-reads the
        token after a 401: bound ServiceAccount tokens expire and the kubelet rotates them.
        """
        transport = httpx2.AsyncHTTPTransport(
            verify=info.as_ssl_context(),
            limits=httpx2.Limits(max_connections=32, max_keepalive_connections=32),
        )
        user = User(token=info.token, token_file=token_file)
        config = KubeConfig.from_one(
            cluster=Cluster(server=info.server),
            user=user,
            namespace=info.default_namespace or "default",
        )
        client = AsyncClient(
            config,
            field_manager=FIELD_MANAGER,
            # Requests queue for a connection without a deadline (pool=None): under a
            # burst of CRs that is back-pressure, not an error; each request still has
            # `timeout` once sent.
            timeout=httpx2.Timeout(timeout, pool=None),
            transport=transport,
            trust_env=False,
        )
        return cls(client)

    @classmethod
    def connect(cls, kubeconfig: str | None) -> KubeApi:
        """A client for `kubeconfig`'s current context, or the pod's ServiceAccount."""
        return cls.from_connection(load_connection(kubeconfig), token_file=token_file(kubeconfig))

    async def close(self) -> None:
        await self.client.close()

    def _count_write(self, method: str) -> None:
        self.writes += 1
        metrics.api_writes.labels(method).inc()

    async def apply(self, manifest: Manifest, *, force: bool = True) -> Manifest:
        """Server-side apply under our field manager.

        `force` takes back fields we declare that someone else changed (drift repair);
        fields we never declare (replicas under an HPA, user labels) stay theirs.
        """
        meta = manifest["metadata"]
        res = resource_class(manifest["apiVersion"], manifest["kind"])
        self._count_write("PATCH")
        try:
            result = await self.client.patch(
                res,
                meta["name"],
                manifest,
                namespace=meta["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=force,
            )
        except LibraryError as error:
            raise ApiError.from_library(error) from error
        return _as_dict(result)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        metrics.api_reads.labels("GET").inc()
        try:
            result = await self.client.get(
                resource_class(api_version, kind), name, namespace=namespace
            )
        except LibraryError as error:
            if error.status.code == 404:
                return None
            raise ApiError.from_library(error) from error
        return _as_dict(result)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[Manifest]:
        """Every object of a kind in `namespace` whose labels match `label_selector`."""
        metrics.api_reads.labels("LIST").inc()
        found = self.client.list(
            resource_class(api_version, kind), namespace=namespace, labels=_labels(label_selector)
        )
        try:
            return [_as_dict(item) async for item in found]
        except LibraryError as error:
            raise ApiError.from_library(error) from error

    async def watch(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> AsyncIterator[tuple[str, Manifest]]:
        """(ADDED | MODIFIED | DELETED, object) for one object: its current state first,
        then each change, until the caller stops iterating."""
        metrics.api_reads.labels("WATCH").inc()
        events = self.client.watch(
            resource_class(api_version, kind), namespace=namespace, fields={"metadata.name": name}
        )
        try:
            async for event, obj in events:
                yield str(event), _as_dict(obj)
        except LibraryError as error:
            raise ApiError.from_library(error) from error

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete if present; returns whether something was deleted."""
        self._count_write("DELETE")
        try:
            await self.client.delete(
                resource_class(api_version, kind),
                name,
                namespace=namespace,
                cascade=CascadeType.BACKGROUND,
            )
        except LibraryError as error:
            if error.status.code == 404:
                return False
            raise ApiError.from_library(error) from error
        return True

    async def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> Manifest:
        """JSON merge patch of an object itself (metadata, spec); not its status.

        Unlike `apply`, it takes no ownership of the fields it sets: for one-shot writes
        such as the control annotations, which their writer or the operator deletes.
        """
        self._count_write("PATCH")
        try:
            result = await self.client.patch(
                resource_class(api_version, kind),
                name,
                patch,
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except LibraryError as error:
            raise ApiError.from_library(error) from error
        return _as_dict(result)

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
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        status_class = resource_class(api_version, kind).Status
        self._count_write("PATCH")
        try:
            result = await self.client.patch(
                status_class, name, body, namespace=namespace, patch_type=PatchType.MERGE
            )
        except LibraryError as error:
            raise ApiError.from_library(error) from error
        return _as_dict(result)

    async def create(self, manifest: Manifest) -> Manifest:
        res = resource_class(manifest["apiVersion"], manifest["kind"])
        self._count_write("POST")
        try:
            result = await self.client.create(_as_object(res, manifest))
        except LibraryError as error:
            raise ApiError.from_library(error) from error
        return _as_dict(result)


def _as_object(res: Any, manifest: Manifest) -> Any:
    """`create` posts a resource object; generic classes are dicts, models convert."""
    if issubclass(res, dict):
        return res(manifest)
    return res.from_dict(manifest)
