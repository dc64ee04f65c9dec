"""Manual canary controls: the annotations `kubectl cricalgo` writes and the operator consumes.

| request | written as |
|---|---|
| promote (next step / --full) | annotation `cricalgo.io/promote: step` / `full` |
| abort | annotation `cricalgo.io/abort: <timestamp>` |
| retry | annotation `cricalgo.io/retry: <timestamp>` |
| resume after a no-data pause | annotation `cricalgo.io/resume: <timestamp>` |
| pause / resume | `spec.canary.paused: true / false` |

The operator deletes a request's annotation once it acted upon it. One-shot requests
are annotations (a GitOps tool that does not own them leaves them
alone, and the operator deletes them when done); pausing is desired state in the spec, so
a GitOps tool that owns the spec reverts a `kubectl cricalgo pause` on its next sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cricalgo_operator.canary.model import Control
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.naming import API_VERSION, GROUP, KIND

PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
RETRY = f"{GROUP}/retry"
RESUME = f"{GROUP}/resume"
ANNOTATION_OF = {"promote": PROMOTE, "abort": ABORT, "retry": RETRY, "resume": RESUME}


def control_from_annotations(annotations: Mapping[str, str]) -> Control:
    """Manual requests pending on the CR. Any promote value but `full` means one step."""
    promote = annotations.get(PROMOTE)
    return Control(
        promote=None if promote is None else ("full" if promote == "full" else "step"),
        abort=ABORT in annotations,
        retry=RETRY in annotations,
        resume=RESUME in annotations,
    )


def request_stamp(now: datetime | None = None) -> str:
    """A request's value: its time, so repeating a request changes the annotation."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def request_patch(request: str, value: str) -> dict[str, Any]:
    """The merge patch that files one control request (`request` in ANNOTATION_OF)."""
    return {"metadata": {"annotations": {ANNOTATION_OF[request]: value}}}


def consumed_patch(requests: frozenset[str]) -> dict[str, Any]:
    """The merge patch that deletes the annotations of handled requests."""
    return {"metadata": {"annotations": {ANNOTATION_OF[r]: None for r in sorted(requests)}}}


def pause_patch(paused: bool) -> dict[str, Any]:
    return {"spec": {"canary": {"paused": paused}}}


async def patch_cad(api: KubeApi, namespace: str, name: str, patch: dict[str, Any]) -> Any:
    """JSON merge patch of the CR itself (spec, metadata); not its status."""
    return await api.patch(API_VERSION, KIND, namespace, name, patch)
