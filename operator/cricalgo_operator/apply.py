"""Applying a CR's rendered children: server-side apply, then pruning leftovers.

`apply(api, cad, manifests)` takes the render the caller made once; the bookkeeping of
`status.children` is pure (children.py), and so are the ownership rules (ownership.py):
an object with a child's name that the CR does not own is neither written over nor
pruned, and OwnershipConflict names it once everything else is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .children import child_id, leftovers, widened_children
from .kubeapi import KIND_VERSIONS, KubeApi
from .model import Cad, Manifest
from .ownership import Conflict, conflicts, conflicts_message, owned_by
from .status import write_status


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


async def find_conflicts(api: KubeApi, cad: Cad, children: Sequence[str]) -> list[Conflict]:
    """Children whose name is taken by an object this CR does not own (ownership.py)."""
    unknown = [c for c in children if (cad.uid, c) not in _OWNED]
    found = await asyncio.gather(*(_existing(api, cad, c) for c in unknown))
    for child, obj in zip(unknown, found, strict=True):
        if obj is not None and owned_by(obj, cad.uid):
            _remember_owned(cad.uid, child)
    return conflicts(zip(unknown, found, strict=True), cad.uid)


async def apply_manifests(api: KubeApi, manifests: Sequence[Manifest]) -> list[Manifest]:
    """Apply concurrently; the first failure is raised after all requests finish."""
    results = await asyncio.gather(*(api.apply(m) for m in manifests), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, dict)]


async def apply(
    api: KubeApi,
    cad: Cad,
    manifests: Sequence[Manifest],
    changed: Sequence[Manifest] | None = None,
) -> tuple[Cad, list[Manifest]]:
    """Make the cluster match `manifests` (the CR's whole render); returns the CR and the
    applied objects. With `changed`, only those are applied (the caller knows the others
    are in place); leftovers are pruned either way.

    Objects with a child's name that the CR does not own are neither written nor pruned;
    everything else is applied and pruned, then OwnershipConflict names them.
    """
    widened = widened_children(cad, manifests)
    if widened is not None:
        cad = await write_status(api, cad, {"children": widened})
    else:
        widened = list(cad.status.get("children") or [])
    wanted = list(manifests if changed is None else changed)
    found = await find_conflicts(api, cad, [child_id(m) for m in wanted])
    refused = {c.child for c in found}
    applied = await apply_manifests(api, [m for m in wanted if child_id(m) not in refused])
    for obj in applied:
        if owned_by(obj, cad.uid):
            _remember_owned(cad.uid, child_id(obj))
    pruned = leftovers(widened, manifests)
    if pruned:
        await asyncio.gather(*(_prune(api, cad, child) for child in pruned))
        cad = await write_status(api, cad, {"children": [child_id(m) for m in manifests]})
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
