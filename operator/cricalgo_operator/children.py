"""Applying a CR's children: server-side apply of `render(cad)`, then pruning leftovers.

`status.children` lists every child ever applied and not yet pruned ("Kind/name"), so
pruning needs no list calls: it deletes what is listed but no longer rendered (the
canary track after a promotion, the Ingresses after a switch to istio, ...). The list
is widened before applying and narrowed after pruning, so a crash in between leaks
nothing. Only objects that carry the CR's owner reference are written over or pruned
(ownership.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .kubeapi import KIND_VERSIONS, KubeApi
from .model import Cad, Manifest
from .ownership import Conflict, conflicts, conflicts_message, owned_by
from .render import render
from .status import write_status


def child_id(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


async def apply_manifests(api: KubeApi, manifests: list[Manifest]) -> list[Manifest]:
    """Apply concurrently; the first failure is raised after all requests finish."""
    results = await asyncio.gather(*(api.apply(m) for m in manifests), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, dict)]


def widened_children(cad: Cad) -> list[str] | None:
    """`status.children` plus what `render(cad)` adds, or None if nothing is new."""
    known = list(cad.status.get("children") or [])
    new = [c for c in (child_id(m) for m in render(cad)) if c not in known]
    return known + new if new else None


class OwnershipConflict(Exception):
    """Objects with a child's name that the CR does not own: left alone, reported."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        super().__init__(conflicts_message(conflicts))
        self.conflicts = conflicts


# (CR uid, child id) of children seen carrying the CR's owner reference in this process,
# so only a child's first write costs a read. Bounded, oldest out first.
_OWNED: dict[tuple[str, str], None] = {}
_OWNED_MAX = 20_000


def _remember_owned(uid: str, child: str) -> None:
    _OWNED[(uid, child)] = None
    while len(_OWNED) > _OWNED_MAX:
        _OWNED.pop(next(iter(_OWNED)))


def forget_owned(uid: str, child: str) -> None:
    """A child went away: its next write checks ownership again."""
    _OWNED.pop((uid, child), None)


async def _existing(api: KubeApi, cad: Cad, child: str) -> Manifest | None:
    kind, _, name = child.partition("/")
    version = KIND_VERSIONS.get(kind)
    return None if version is None else await api.get(version, kind, cad.namespace, name)


async def find_conflicts(api: KubeApi, cad: Cad, children: list[str]) -> list[Conflict]:
    """Children whose name is taken by an object this CR does not own (ownership.py)."""
    unknown = [c for c in children if (cad.uid, c) not in _OWNED]
    found = await asyncio.gather(*(_existing(api, cad, c) for c in unknown))
    for child, obj in zip(unknown, found, strict=True):
        if obj is not None and owned_by(obj, cad.uid):
            _remember_owned(cad.uid, child)
    return conflicts(zip(unknown, found, strict=True), cad.uid)


async def apply_children(api: KubeApi, cad: Cad) -> tuple[Cad, list[Manifest]]:
    """Make the cluster match `render(cad)`; returns the CR and the applied objects.

    Objects with a child's name that the CR does not own are neither written nor pruned;
    everything else is applied, then OwnershipConflict names them.
    """
    desired = render(cad)
    wanted = [child_id(m) for m in desired]
    widened = widened_children(cad)
    if widened is not None:
        cad = await write_status(api, cad, {"children": widened})
    else:
        widened = list(cad.status.get("children") or [])
    found = await find_conflicts(api, cad, wanted)
    refused = {c.child for c in found}
    applied = await apply_manifests(api, [m for m in desired if child_id(m) not in refused])
    for manifest in applied:
        if owned_by(manifest, cad.uid):
            _remember_owned(cad.uid, child_id(manifest))
    leftovers = [c for c in widened if c not in wanted]
    if leftovers:
        await asyncio.gather(*(_prune(api, cad, child) for child in leftovers))
        cad = await write_status(api, cad, {"children": wanted})
    if found:
        raise OwnershipConflict(found)
    return cad, applied


async def _prune(api: KubeApi, cad: Cad, child: str) -> None:
    """Delete a child no longer rendered, if it is still the CR's own (else leave it)."""
    kind, _, name = child.partition("/")
    version = KIND_VERSIONS.get(kind)
    if version is None:
        return
    existing = await api.get(version, kind, cad.namespace, name)
    if existing is not None and owned_by(existing, cad.uid):
        await api.delete(version, kind, cad.namespace, name)
    forget_owned(cad.uid, child)


def drifted(desired: Any, actual: Any) -> bool:
    """Whether `actual` lacks or differs in any field `desired` declares.

    Extra fields in `actual` (defaults, status, other managers' fields) are not drift.
    A false positive only costs one no-op apply.
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return True
        return any(drifted(v, actual.get(k)) for k, v in desired.items() if v is not None)
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return True
        return any(drifted(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired != actual)
