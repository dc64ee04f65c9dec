"""Child identity and the `status.children` bookkeeping (pure).

`status.children` lists every child ever applied and not yet pruned ("Kind/name"), so
pruning needs no list calls: what is listed but no longer rendered is a leftover (the
canary track after a promotion, the Ingresses after a switch to istio, ...). The list is
widened before applying and narrowed after pruning, so a crash in between leaks nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .model import Cad


def child_id(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def by_child_id(manifests: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {child_id(m): m for m in manifests}


def widened_children(cad: Cad, manifests: Iterable[Mapping[str, Any]]) -> list[str] | None:
    """`status.children` plus what `manifests` add, or None if nothing is new."""
    known = list(cad.status.get("children") or [])
    new = [c for c in (child_id(m) for m in manifests) if c not in known]
    return known + new if new else None


def leftovers(children: Iterable[str], manifests: Iterable[Mapping[str, Any]]) -> list[str]:
    """Listed children that `manifests` no longer contain: to be pruned."""
    wanted = {child_id(m) for m in manifests}
    return [c for c in children if c not in wanted]
