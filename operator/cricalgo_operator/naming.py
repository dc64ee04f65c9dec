"""Names and labels of everything the operator creates for a CricAlgoDeployment.

Children of CR `NAME` (documented in docs/crd-reference.md):

    Deployment, HPA, PDB   NAME-app, NAME-app-canary, NAME-worker, NAME-worker-canary
    Service                NAME (both tracks), NAME-stable, NAME-canary (app pods only)
    VirtualService, DestinationRule   NAME            (traffic.provider istio)
    Ingress                NAME, NAME-canary          (traffic.provider nginx)
    ServiceAccount         NAME
"""

from __future__ import annotations

from typing import Literal

GROUP = "cricalgo.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CricAlgoDeployment"
PLURAL = "cricalgodeployments"

FIELD_MANAGER = "cricalgo-operator"
MANAGED_BY = "cricalgo-operator"
APP_NAME = "cricalgo"

Component = Literal["app", "worker"]
Track = Literal["stable", "canary"]
COMPONENTS: tuple[Component, ...] = ("app", "worker")
TRACKS: tuple[Track, ...] = ("stable", "canary")


def workload_name(name: str, component: Component, track: Track) -> str:
    """Name of the Deployment, HPA and PDB of one component and track."""
    base = f"{name}-{component}"
    return base if track == "stable" else f"{base}-canary"


def service_name(name: str, track: Track | None) -> str:
    """`NAME` selects both tracks; `NAME-stable` / `NAME-canary` select one."""
    return name if track is None else f"{name}-{track}"


def canary_ingress_name(name: str) -> str:
    return f"{name}-canary"


def instance_labels(name: str) -> dict[str, str]:
    """Labels on every child of the CR (the standard app.kubernetes.io set)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": APP_NAME,
    }


def children_selector(name: str, track: Track | None = None) -> dict[str, str]:
    """The labels (all must match) of the CR's children, of one track if given."""
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": MANAGED_BY}
    return selector if track is None else {**selector, "track": track}


def selector_labels(name: str, component: Component, track: Track | None) -> dict[str, str]:
    """Labels selecting the pods of one component (and track, when given)."""
    labels = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }
    if track is not None:
        labels["track"] = track
    return labels


def image_version(image: str) -> str:
    """The `version` label of an image: its tag (or digest prefix), else `latest`.

    Label values allow at most 63 characters of [A-Za-z0-9._-].
    """
    ref = image.rsplit("/", 1)[-1]
    if "@" in ref:
        version = ref.split("@", 1)[1].replace(":", "-")
    elif ":" in ref:
        version = ref.split(":", 1)[1]
    else:
        version = "latest"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in version)[:63]
    return cleaned.strip("._-") or "latest"
