"""Kopf handlers: decode, call the reconciler, map errors to Kopf's retry policy.

Importing this module registers the handlers with Kopf's default registry.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from typing import Any

import kopf

from . import metrics
from .apply import OwnershipConflict, forget_owned
from .config import OperatorConfig
from .connection import load_connection
from .diffbase import RedactedDiffBaseStorage
from .failures import OWNERSHIP_CONFLICT, RECONCILE_FAILED, report_failure
from .kubeapi import ApiError, KubeApi, TransportError
from .model import Cad
from .naming import GROUP, KIND, MANAGED_BY, PLURAL, VERSION
from .notifications import sender as notifications
from .notifications.sender import Notifier
from .readiness import DeploymentReadiness, deployment_readiness
from .reconcile import RenderedCad, reconcile_fresh, refresh_readiness, repair_child
from .resync import settled

# Children watched for drift: (groupversion, plural).
CHILD_RESOURCES = (
    ("v1", "serviceaccounts"),
    ("v1", "services"),
    ("apps/v1", "deployments"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "ingresses"),
    ("networking.istio.io/v1", "virtualservices"),
    ("networking.istio.io/v1", "destinationrules"),
)
OURS = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Every Kopf setting of the operator, in one place (CONVENTIONS 6)."""
    config: OperatorConfig = memo.config
    # No handler needs a finalizer (children go with owner references); the name is
    # set so that any future one is ours and recognisable.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # The CRD status schema is strict, so Kopf's bookkeeping lives in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # Literal env values are kept there as hashes only (diffbase.py).
    settings.persistence.diffbase_storage = RedactedDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.watching.connect_timeout = 30
    # Our own Events carry the transitions; Kopf posts only its warnings and errors.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = config.peering is None
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.clusterwide = config.clusterwide
        # Equal priorities pause every peer; distinct ones keep the highest live one active.
        priority = config.peering_priority
        settings.peering.priority = random.randint(1, 2**31) if priority is None else priority
        settings.peering.lifetime = config.peering_lifetime
    # No CRD or namespace watching: the operator's resources are fixed at start.
    settings.scanning.disabled = True
    settings.execution.max_workers = 10
    memo.api = KubeApi.connect(config.kubeconfig)
    # Rollout notifications: a queue and workers of their own, off the reconcile path.
    memo.notifier = Notifier(memo.api)
    memo.notifier.start()
    notifications.install(memo.notifier)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    notifier: Notifier | None = memo.get("notifier")
    if notifier is not None:
        notifications.install(None)
        await notifier.stop()
    api: KubeApi | None = memo.get("api")
    if api is not None:
        await api.close()


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    config: OperatorConfig = memo.config
    return load_connection(config.kubeconfig)


@kopf.index(GROUP, VERSION, PLURAL)
def cads(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, RenderedCad]:
    """CRs and their render by (namespace, name), for the child watchers' drift checks."""
    return {(namespace, name): RenderedCad.of(Cad.from_body(body))}


@kopf.index("apps", "v1", "deployments", labels=OURS)
def deployments(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[Any, DeploymentReadiness] | None:
    """Readiness of our Deployments by owning CR (namespace, name)."""
    owner = _owner(body)
    if owner is None:
        return None
    return {(namespace, owner["name"]): deployment_readiness(dict(body))}


def _owner(body: kopf.Body) -> dict[str, Any] | None:
    refs = body.metadata.get("ownerReferences") or []
    return next((dict(r) for r in refs if r.get("kind") == KIND), None)


def _child_id(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Any, str] | None:
    """Which children exist, by owning CR (namespace, name): "Kind/name"."""
    owner = _owner(body)
    if owner is None:
        return None
    return {(namespace, owner["name"]): f"{body.get('kind')}/{body.metadata.get('name')}"}


for _groupversion, _plural in CHILD_RESOURCES:
    kopf.index(_groupversion, _plural, labels=OURS, id=f"children_{_plural}")(_child_id)


def _present(cad: Cad, indexes: dict[str, Any]) -> set[str]:
    present: set[str] = set()
    for _, plural in CHILD_RESOURCES:
        index = indexes.get(f"children_{plural}")
        if index is not None:
            present.update(index.get((cad.namespace, cad.name), []))
    return present


@kopf.on.resume(GROUP, VERSION, PLURAL, retries=20, backoff=5, timeout=900)
async def resume_cad(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Operator restart: reconcile only a CR that is not settled (resync.settled).

    Kopf fills the indexes before it calls any handler, so a child deleted while the
    operator was away is missing from them and its CR is reconciled."""
    cad = Cad.from_body(body)
    if settled(cad, _present(cad, kwargs)):
        return
    await _reconcile(cad, memo)


@kopf.on.create(GROUP, VERSION, PLURAL, retries=20, backoff=5, timeout=900)
@kopf.on.update(GROUP, VERSION, PLURAL, retries=20, backoff=5, timeout=900)
async def reconcile_cad(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Create, change: render and apply everything, update the status.

    A failure other than a lost write race is put on the CR (Degraded condition and a
    Warning Event, failures.py), not only in the log.
    """
    await _reconcile(Cad.from_body(body), memo)


async def _reconcile(cad: Cad, memo: kopf.Memo) -> None:
    started = time.perf_counter()
    try:
        await reconcile_fresh(memo.api, cad, _now())
    except OwnershipConflict as error:
        metrics.reconcile_errors.labels(KIND).inc()
        await report_failure(
            memo.api, cad.namespace, cad.name, OWNERSHIP_CONFLICT, str(error), _now()
        )
        # The owner of the object may delete or rename it: look again now and then.
        raise kopf.TemporaryError(str(error), delay=30) from error
    except ApiError as error:
        metrics.reconcile_errors.labels(KIND).inc()
        if error.status != 409:
            message = f"the API server refused a write ({error.status}): {error.message}"
            await report_failure(
                memo.api, cad.namespace, cad.name, RECONCILE_FAILED, message, _now()
            )
        if error.status == 422:
            raise kopf.PermanentError(f"the API server rejected a child: {error}") from error
        # 409: someone wrote the CR meanwhile; 403: RBAC may be fixed; 5xx: transient.
        raise kopf.TemporaryError(str(error), delay=1 if error.status == 409 else 10) from error
    except TransportError as error:
        metrics.reconcile_errors.labels(KIND).inc()
        raise kopf.TemporaryError(f"API server unreachable: {error!r}", delay=5) from error
    finally:
        metrics.reconcile_duration.labels(KIND).observe(time.perf_counter() - started)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
    if event["type"] == "DELETED" and namespace:
        metrics.forget(namespace, name)


async def child_changed(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    cads: kopf.Index[Any, RenderedCad] | None = None,
    deployments: kopf.Index[Any, DeploymentReadiness] | None = None,
    **_: Any,
) -> None:
    """A child changed or went away: put it back if it differs from its render."""
    owner = _owner(body)
    if owner is None or namespace is None or cads is None:
        return
    rendered = next(iter(cads.get((namespace, owner["name"]), [])), None)
    if rendered is None or rendered.cad.uid != owner.get("uid"):
        return
    cad = rendered.cad
    kind = body.get("kind") or ""
    actual = None if event["type"] == "DELETED" else dict(body)
    if actual is None:
        forget_owned(cad.uid, f"{kind}/{name}")
    try:
        if await repair_child(memo.api, rendered, kind, name, actual):
            what = "deleted" if actual is None else "changed"
            logger.info(f"{kind} {name} was {what} by hand; re-applied")
        if kind == "Deployment" and deployments is not None:
            mine = list(deployments.get((namespace, cad.name), []))
            await refresh_readiness(memo.api, cad, mine, _now())
    except (ApiError, TransportError) as error:
        metrics.reconcile_errors.labels(kind).inc()
        logger.warning(f"could not repair {kind} {name}: {error!r}")


for _groupversion, _plural in CHILD_RESOURCES:
    kopf.on.event(_groupversion, _plural, labels=OURS, id=f"drift-{_plural}")(child_changed)
