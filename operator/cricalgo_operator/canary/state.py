"""The canary part of a CR's status, as the engine reads and writes it.

Plain immutable data parsed from (and rendered back to) the status dictionary; the
engine's decisions carry the next one, and `patch_from` turns it into the one merge patch
that persists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


HISTORY_LIMIT = 10
# The status fields the canary engine owns (camelCase, as in the CR).
OWNED_FIELDS = (
    "phase",
    "stableImage",
    "stableRevision",
    "stableSpec",
    "canaryImage",
    "canaryRevision",
    "canaryWeight",
    "currentStep",
    "stepStartedAt",
    "canaryStartedAt",
    "failedChecks",
    "inconclusiveChecks",
    "failedImage",
    "promotionReason",
    "promotionReplicas",
    "history",
    "lastAnalysis",
    "conditions",
    "migration",
)


@dataclass(frozen=True)
class CanaryStatus:
    """The part of `status` the canary engine owns: everything needed to resume after an
    operator restart, the history of ended canaries, and the conditions they imply."""

    phase: str | None = None
    stable_image: str | None = None
    stable_revision: str | None = None
    stable_spec: Mapping[str, Any] | None = None
    canary_image: str | None = None
    canary_revision: str | None = None
    canary_weight: int = 0
    current_step: int = -1
    step_started_at: datetime | None = None
    canary_started_at: datetime | None = None
    failed_checks: int = 0
    inconclusive_checks: int = 0
    failed_image: str | None = None
    promotion_reason: str | None = None
    promotion_replicas: Mapping[str, int] | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    last_analysis: Mapping[str, Any] | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()
    # The last migration Job seen (migrations.py): {job, state, message}; kept after the
    # canary ends, so a later revision needing the same Job does not run it again.
    migration: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, status: Mapping[str, Any] | None) -> CanaryStatus:
        status = status or {}
        return cls(
            phase=status.get("phase"),
            stable_image=status.get("stableImage"),
            stable_revision=status.get("stableRevision"),
            stable_spec=status.get("stableSpec"),
            canary_image=status.get("canaryImage"),
            canary_revision=status.get("canaryRevision"),
            canary_weight=int(status.get("canaryWeight") or 0),
            current_step=int(
                status.get("currentStep", -1) if status.get("currentStep") is not None else -1
            ),
            step_started_at=parse_time(status.get("stepStartedAt")),
            canary_started_at=parse_time(status.get("canaryStartedAt")),
            failed_checks=int(status.get("failedChecks") or 0),
            inconclusive_checks=int(status.get("inconclusiveChecks") or 0),
            failed_image=status.get("failedImage"),
            promotion_reason=status.get("promotionReason"),
            promotion_replicas=status.get("promotionReplicas"),
            history=tuple(status.get("history") or ()),
            last_analysis=status.get("lastAnalysis"),
            conditions=tuple(status.get("conditions") or ()),
            migration=status.get("migration"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The owned fields as the CR has them; None means the field is absent."""
        return {
            "phase": self.phase,
            "stableImage": self.stable_image,
            "stableRevision": self.stable_revision,
            "stableSpec": dict(self.stable_spec) if self.stable_spec is not None else None,
            "canaryImage": self.canary_image,
            "canaryRevision": self.canary_revision,
            "canaryWeight": self.canary_weight,
            "currentStep": self.current_step,
            "stepStartedAt": format_time(self.step_started_at) if self.step_started_at else None,
            "canaryStartedAt": (
                format_time(self.canary_started_at) if self.canary_started_at else None
            ),
            "failedChecks": self.failed_checks,
            "inconclusiveChecks": self.inconclusive_checks,
            "failedImage": self.failed_image,
            "promotionReason": self.promotion_reason,
            "promotionReplicas": (
                dict(self.promotion_replicas) if self.promotion_replicas is not None else None
            ),
            "history": [dict(h) for h in self.history] or None,
            "lastAnalysis": dict(self.last_analysis) if self.last_analysis is not None else None,
            "conditions": [dict(c) for c in self.conditions] or None,
            "migration": dict(self.migration) if self.migration is not None else None,
        }

    def patch_from(self, before: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON merge patch that turns the owned fields of `before` (a CR's status)
        into this status; empty when nothing changes."""
        old = {k: before[k] for k in OWNED_FIELDS if before.get(k) is not None}
        new = {k: v for k, v in self.to_dict().items() if v is not None}
        return merge_patch(old, new)

    @property
    def canary_active(self) -> bool:
        """A canary track exists (its Deployments, at some weight)."""
        return bool(self.canary_revision or self.canary_image)

    def evolve(self, **changes: Any) -> CanaryStatus:
        return replace(self, **changes)


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch from `old` to `new` (absent keys are deleted)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch
