"""What a receiver gets (pure): a signed JSON webhook, or a Slack-compatible message.

The webhook follows the Standard Webhooks layout (`type`, `timestamp`, `data`) and its
signature scheme: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>` of
HMAC-SHA256 over `id.timestamp.body` with the secret's bytes (the base64 after `whsec_`).
Signing is six lines of the standard library; the tests check it against the reference
implementation (the `standardwebhooks` package).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
from typing import Any

from cricalgo_operator.notifications.events import Happened, RolloutEvent

EVENT_TYPES = {
    RolloutEvent.STARTED: "canary.started",
    RolloutEvent.STEP_ADVANCED: "canary.step_advanced",
    RolloutEvent.PAUSED: "canary.paused",
    RolloutEvent.PROMOTED: "canary.promoted",
    RolloutEvent.ROLLED_BACK: "canary.rolled_back",
    RolloutEvent.FAILED: "canary.failed",
}

_SLACK_ICONS = {
    RolloutEvent.STARTED: ":rocket:",
    RolloutEvent.STEP_ADVANCED: ":arrow_forward:",
    RolloutEvent.PAUSED: ":double_vertical_bar:",
    RolloutEvent.PROMOTED: ":white_check_mark:",
    RolloutEvent.ROLLED_BACK: ":rewind:",
    RolloutEvent.FAILED: ":x:",
}


class SigningSecretError(ValueError):
    """The signing secret is not `whsec_` followed by base64."""


def _time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def webhook_payload(
    happened: Happened, namespace: str, name: str, moment: datetime.datetime
) -> dict[str, Any]:
    """The generic webhook's JSON body."""
    return {
        "type": EVENT_TYPES[happened.event],
        "timestamp": _time(moment),
        "data": {
            "namespace": namespace,
            "name": name,
            "event": str(happened.event),
            "canaryImage": happened.canary_image,
            "stableImage": happened.stable_image,
            "weight": happened.weight,
            "step": happened.step,
            "reason": happened.reason,
        },
    }


def describe(happened: Happened, namespace: str, name: str) -> str:
    """One line a person reads: what happened to which canary, and why."""
    who = f"{namespace}/{name}"
    image = happened.canary_image or "the canary"
    text = {
        RolloutEvent.STARTED: f"canary of {who} started: {image}"
        + (f" (stable {happened.stable_image})" if happened.stable_image else ""),
        RolloutEvent.STEP_ADVANCED: (
            f"canary of {who} at step {happened.step + 1}: {happened.weight}% of traffic to {image}"
        ),
        RolloutEvent.PAUSED: f"canary of {who} paused at {happened.weight}% ({image})",
        RolloutEvent.PROMOTED: f"canary of {who} promoted: {image} is the stable version",
        RolloutEvent.ROLLED_BACK: f"canary of {who} rolled back: {image}",
        RolloutEvent.FAILED: f"canary of {who} failed",
    }[happened.event]
    return f"{text}: {happened.reason}" if happened.reason else text


def slack_payload(happened: Happened, namespace: str, name: str) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook message (also understood by Mattermost and
    Rocket.Chat): `text` for notifications and clients without blocks, one section block."""
    line = f"{_SLACK_ICONS[happened.event]} {describe(happened, namespace, name)}"
    return {
        "text": line,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": line}}],
    }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for `body`."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise SigningSecretError("the signing secret is not whsec_ followed by base64") from None
    if not key:
        raise SigningSecretError("the signing secret is empty")
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
    }
