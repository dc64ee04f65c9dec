"""Kopf's last-handled-configuration annotation without literal env values.

Kopf stores the CR's essence (spec, labels, annotations) in an annotation to compute
diffs. `spec.env[].value` may be a secret someone put there despite `valueFrom` and
`webhook.secretRef`; an annotation is readable by anyone who can `get` the CR, so each
literal value is kept as its SHA-256 instead: enough to see that it changed, useless to
read back.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from typing import Any

import kopf


def redact_env(env: Any) -> Any:
    """`env` with every literal `value` replaced by `valueSha256` (pure)."""
    if not isinstance(env, list):
        return env
    out: list[Any] = []
    for entry in env:
        if isinstance(entry, dict) and isinstance(entry.get("value"), str):
            digest = hashlib.sha256(entry["value"].encode()).hexdigest()
            entry = {**{k: v for k, v in entry.items() if k != "value"}, "valueSha256": digest}
        out.append(entry)
    return out


def redact_essence(essence: dict[str, Any]) -> dict[str, Any]:
    """A Kopf body essence with `spec.env` redacted (does not modify `essence`)."""
    spec = essence.get("spec")
    if not isinstance(spec, dict) or "env" not in spec:
        return essence
    out = copy.deepcopy(essence)
    out["spec"]["env"] = redact_env(spec["env"])
    return out


class RedactedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's annotation diff-base, storing `redact_essence` of each body."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        return redact_essence(dict(essence))  # type: ignore[return-value]
