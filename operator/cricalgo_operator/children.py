"""Applying a CR's children: server-side apply of `render(cad)`, then pruning leftovers.

`status.children` lists every child ever applied and not yet pruned ("Kind/name"), so
pruning needs no list calls: it deletes what is listed but no longer rendered (the
canary track after a promotion, the Ingresses after a switch to istio, ...). The list
is widened before applying and narrowed after pruning, so a crash in between leaks
nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .kubeapi import KIND_VERSIONS, KubeApi
from .model import Cad, Manifest
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


async def apply_children(api: KubeApi, cad: Cad) -> tuple[Cad, list[Manifest]]:
    """Make the cluster match `render(cad)`; returns the CR and the applied objects."""
    desired = render(cad)
    wanted = [child_id(m) for m in desired]
    widened = widened_children(cad)
    if widened is not None:
        cad = await write_status(api, cad, {"children": widened})
    else:
        widened = list(cad.status.get("children") or [])
    applied = await apply_manifests(api, desired)
    leftovers = [c for c in widened if c not in wanted]
    if leftovers:
        await asyncio.gather(*(_delete(api, cad, child) for child in leftovers))
        cad = await write_status(api, cad, {"children": wanted})
    return cad, applied


async def _delete(api: KubeApi, cad: Cad, child: str) -> None:
    kind, _, name = child.partition("/")
    version = KIND_VERSIONS.get(kind)
    if version is not None:
        await api.delete(version, kind, cad.namespace, name)


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
