"""The stable track's literal env values live in a Secret the CR owns, never in its status.

`status.stableSpec` is the snapshot the stable pods are rendered from, kept after the
spec has moved on. A literal `env[].value` copied into it would stay readable by anyone
who can read the CR. So before a status write stores a snapshot, each literal value is
moved into a Secret and the snapshot keeps a `valueFrom.secretKeyRef` in its place: the
stable pods read the value from the Secret, the status holds only its name and key.

The Secret is named after a hash of the values it holds (`NAME-env-<10 hex>`), so the
same values always give the same name and the snapshot alone says which Secret the
stable needs. It is immutable, carries the CR's owner reference (deleted with the CR),
and is created before the status write that refers to it. `status.envSecrets` names the
Secrets the CR keeps: when a snapshot replaces another, the outgoing one stays until the
next replacement (for containers of the outgoing pods that restart meanwhile) and the
others are deleted by name (the operator's role cannot list Secrets).

Pure functions decide (`externalize`, `plan_status_patch`); `prepare_status_patch` is
the edge, called by `status.write_status` for every status write.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .kubeapi import ApiError, KubeApi, Manifest
from .model import Cad, pod_inputs
from .naming import instance_labels
from .ownership import describe_owner, owned_by

COMPONENT = "stable-env"
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


class StableEnvConflict(Exception):
    """A Secret with the name the stable env needs exists and is not the CR's."""


def literal_values(env: Any) -> list[tuple[str, str]]:
    """(name, value) of each literal `value` in an env list, in order."""
    if not isinstance(env, list):
        return []
    return [
        (str(e.get("name")), e["value"])
        for e in env
        if isinstance(e, Mapping) and isinstance(e.get("value"), str)
    ]


def has_literal_env(snapshot: Mapping[str, Any] | None) -> bool:
    """Whether a stableSpec snapshot still holds a literal env value."""
    return bool(snapshot) and bool(literal_values((snapshot or {}).get("env")))


def secret_name(cad_name: str, literals: Sequence[tuple[str, str]]) -> str:
    """`NAME-env-<hash of the values>`: equal values, equal name."""
    blob = json.dumps([list(pair) for pair in literals], separators=(",", ":")).encode()
    return f"{cad_name}-env-{hashlib.sha256(blob).hexdigest()[:10]}"


def _keys(literals: Sequence[tuple[str, str]]) -> list[str]:
    """A Secret key per literal: the variable's name when it is a valid key and not taken
    (duplicated names are legal in an env list), else `env-<position>`."""
    keys: list[str] = []
    for index, (name, _) in enumerate(literals):
        key = name if _SECRET_KEY.fullmatch(name) and name not in keys else f"env-{index}"
        while key in keys:
            key = f"{key}_"
        keys.append(key)
    return keys


@dataclass(frozen=True)
class StableEnv:
    """A snapshot with its literal values moved out, and the Secret holding them."""

    snapshot: dict[str, Any]
    secret: Manifest | None  # None: the snapshot had no literal value


def render_secret(cad: Cad, name: str, data: Mapping[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": cad.namespace,
            "labels": {**instance_labels(cad.name), "app.kubernetes.io/component": COMPONENT},
            "ownerReferences": [cad.owner_reference()],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def externalize(cad: Cad, snapshot: Mapping[str, Any]) -> StableEnv:
    """`snapshot` (a stableSpec) with each literal env value replaced by a reference into
    the Secret returned beside it (pure; does not modify `snapshot`)."""
    env = snapshot.get("env")
    literals = literal_values(env)
    if not literals:
        return StableEnv(dict(snapshot), None)
    name = secret_name(cad.name, literals)
    keys = iter(_keys(literals))
    data: dict[str, str] = {}
    out: list[Any] = []
    for entry in env or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("value"), str):
            key = next(keys)
            data[key] = entry["value"]
            rest = {k: v for k, v in entry.items() if k != "value"}
            entry = {**rest, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
        out.append(entry)
    return StableEnv({**snapshot, "env": out}, render_secret(cad, name, data))


def referenced_secret(cad_name: str, snapshot: Mapping[str, Any] | None) -> str | None:
    """The stable-env Secret a snapshot refers to, if any."""
    pattern = re.compile(re.escape(cad_name) + r"-env-[0-9a-f]{10}")
    for entry in (snapshot or {}).get("env") or []:
        ref = ((entry or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if pattern.fullmatch(str(ref.get("name") or "")):
            return str(ref["name"])
    return None


def plan_status_patch(cad: Cad, patch: Mapping[str, Any]) -> tuple[dict[str, Any], Manifest | None]:
    """A status patch as it may be written, and the Secret to create before it (pure).

    A `stableSpec` with literal values is externalized. One that already refers to a
    stable-env Secret (its writer externalized it) needs that Secret, made from the
    CR's spec when the spec's values are the ones it names; otherwise it exists already.
    """
    snapshot = patch.get("stableSpec")
    if not isinstance(snapshot, Mapping):
        return dict(patch), None
    if has_literal_env(snapshot):
        moved = externalize(cad, snapshot)
        return {**patch, "stableSpec": moved.snapshot}, moved.secret
    wanted = referenced_secret(cad.name, snapshot)
    if wanted is None:
        return dict(patch), None
    from_spec = externalize(cad, pod_inputs(cad.spec)).secret
    if from_spec is not None and from_spec["metadata"]["name"] == wanted:
        return dict(patch), from_spec
    return dict(patch), None


async def ensure_secret(api: KubeApi, cad: Cad, secret: Manifest) -> None:
    """Create the Secret unless the CR's own exists (same name, same values: it is
    immutable and named after its values). A namesake the CR does not own is refused."""
    name = secret["metadata"]["name"]
    existing = await api.get("v1", "Secret", cad.namespace, name)
    if existing is None:
        try:
            await api.create(secret)
            return
        except ApiError as error:
            if error.status != 409:
                raise
            existing = await api.get("v1", "Secret", cad.namespace, name)
    if existing is not None and not owned_by(existing, cad.uid):
        raise StableEnvConflict(
            f"Secret/{name} exists and is not this CricAlgoDeployment's "
            f"({describe_owner(existing)}); the stable track's env values cannot be stored"
        )


def kept_secrets(cad: Cad, snapshot: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(`status.envSecrets` once `snapshot` replaces the current stableSpec, the Secrets
    to delete): the new snapshot's Secret and the current one's are kept, every other
    one the CR recorded goes (pure)."""
    current = referenced_secret(cad.name, cad.status.get("stableSpec"))
    keep = list(dict.fromkeys(n for n in (referenced_secret(cad.name, snapshot), current) if n))
    known = [*(cad.status.get("envSecrets") or []), *([current] if current else [])]
    return keep, [n for n in dict.fromkeys(known) if n not in keep]


async def delete_secret(api: KubeApi, cad: Cad, name: str) -> None:
    """Delete one of the CR's stable-env Secrets by name, only if it carries the CR's uid."""
    existing = await api.get("v1", "Secret", cad.namespace, name)
    if existing is not None and owned_by(existing, cad.uid):
        await api.delete("v1", "Secret", cad.namespace, name)


async def prepare_status_patch(api: KubeApi, cad: Cad, patch: dict[str, Any]) -> dict[str, Any]:
    """`plan_status_patch`, with its Secret created. A new snapshot also records the
    Secrets the CR keeps (`status.envSecrets`) and deletes the others, by name: the
    operator never lists Secrets."""
    planned, secret = plan_status_patch(cad, patch)
    if secret is not None:
        await ensure_secret(api, cad, secret)
    snapshot = planned.get("stableSpec")
    if isinstance(snapshot, Mapping) and snapshot != cad.status.get("stableSpec"):
        keep, gone = kept_secrets(cad, snapshot)
        for name in gone:
            await delete_secret(api, cad, name)
        if keep != (cad.status.get("envSecrets") or []):
            planned["envSecrets"] = keep or None
    return planned
