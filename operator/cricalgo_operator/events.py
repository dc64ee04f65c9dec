"""What happened to a CricAlgoDeployment, as Kubernetes Events (pure: no client here)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

from .model import Cad
from .naming import API_VERSION, FIELD_MANAGER, KIND


@dataclass(frozen=True)
class Transition:
    """What happened, as an Event: `reason` is CamelCase, `message` a sentence."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_event(cad: Cad, transition: Transition, now: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{cad.name}.", "namespace": cad.namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": cad.name,
            "namespace": cad.namespace,
            "uid": cad.uid,
        },
        "reason": transition.reason,
        "message": transition.message[:1024],
        "type": transition.type,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
    }
