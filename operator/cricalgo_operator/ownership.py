"""Whose object is it: the rules for adopting, repairing and pruning a CR's children (pure).

The operator writes children with forced server-side apply and a controller owner
reference, which would take over any object that merely has a child's name. So before an
object is first written, and before anything is deleted, its owner references decide:

- no object of that name: the CR creates it;
- an owner reference carrying the CR's uid: the CR's own child, applied or pruned;
- anything else (no owner, another CR, another controller, a namesake left by a CR of the
  same name deleted and created again): not ours; never written, never deleted, and
  reported as a conflict that names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def owned_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether `obj` carries an owner reference with this `uid`."""
    if obj is None or not uid:
        return False
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def describe_owner(obj: Mapping[str, Any]) -> str:
    """Who owns `obj`, for a message: its controller, else its first owner, else nobody."""
    refs = [r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r]
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is None:
        return "no owner"
    return f"owned by {ref.get('kind', '?')}/{ref.get('name', '?')} (uid {ref.get('uid', '?')})"


@dataclass(frozen=True)
class Conflict:
    """An object with a child's name that this CR does not own."""

    child: str  # Kind/name
    owner: str  # describe_owner()

    def message(self) -> str:
        return (
            f"{self.child} exists and is not this CricAlgoDeployment's ({self.owner}); "
            "the operator leaves it alone: delete or rename it, or rename the CR"
        )


def may_write(existing: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether the CR with `uid` may apply its child over `existing` (None: absent)."""
    return existing is None or owned_by(existing, uid)


def conflicts(found: Iterable[tuple[str, Mapping[str, Any] | None]], uid: str) -> list[Conflict]:
    """The (child id, existing object) pairs the CR must not write."""
    return [
        Conflict(child, describe_owner(obj))
        for child, obj in found
        if obj is not None and not owned_by(obj, uid)
    ]


def conflicts_message(found: Iterable[Conflict]) -> str:
    return "; ".join(c.message() for c in found)
