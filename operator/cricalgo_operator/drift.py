"""Drift: whether a live child still carries what its render declares (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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


def needs_repair(desired: Mapping[str, Any] | None, actual: Mapping[str, Any] | None) -> bool:
    """A rendered child (`desired`) that is gone (`actual` None) or drifted from its render."""
    if desired is None:
        return False
    return actual is None or drifted(desired, actual)
