"""Standard Webhooks signature verification (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``; the header
``webhook-signature`` holds one or more space-separated ``v1,<base64 HMAC-SHA256>``
entries so a sender can sign with an old and a new secret while rotating. Svix, the
largest sender, names the same three headers ``svix-id``, ``svix-timestamp`` and
``svix-signature``; both names are read, header by header, as Svix's own verifier does.
Pure functions: the caller passes the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
# An HMAC-SHA256 key shorter than this is guessable; Standard Webhooks secrets carry 24-64
# random bytes (Svix's are 24).
MIN_SECRET_BYTES = 24
# (standard name, Svix's name) of each header the signature needs.
ID_HEADERS = ("webhook-id", "svix-id")
TIMESTAMP_HEADERS = ("webhook-timestamp", "svix-timestamp")
SIGNATURE_HEADERS = ("webhook-signature", "svix-signature")
SIGNATURE_HEADER_NAMES = frozenset((*ID_HEADERS, *TIMESTAMP_HEADERS, *SIGNATURE_HEADERS))


class SignatureError(Exception):
    """The delivery is not authentic (or not verifiable); `reason` is safe to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedDelivery:
    webhook_id: str
    timestamp: int


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError (saying why) for a secret that
    is not base64 or decodes to fewer than `MIN_SECRET_BYTES` bytes."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"webhook secret decodes to {len(key)} bytes; at least {MIN_SECRET_BYTES} random"
            " bytes are required (anyone could guess a shorter key and sign deliveries)"
        )
    return key


def _first(headers: Mapping[str, str], names: tuple[str, str]) -> str | None:
    return headers.get(names[0]) or headers.get(names[1])


def _valid_id(webhook_id: str) -> bool:
    # Printable ASCII without spaces, as every sender's ids are: the id is stored (and
    # PostgreSQL text refuses NUL), so anything else is refused before it reaches a write.
    return len(webhook_id) <= 255 and all("!" <= c <= "~" for c in webhook_id)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` entry, as a sender computes it."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    keys: Iterable[bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_seconds: int = 300,
) -> VerifiedDelivery:
    """Check a delivery's headers (`webhook-*` or `svix-*`) against every key; raise
    `SignatureError` unless one `v1` signature matches one key and the timestamp is within
    the tolerance either way."""
    webhook_id = _first(headers, ID_HEADERS)
    raw_timestamp = _first(headers, TIMESTAMP_HEADERS)
    signature_header = _first(headers, SIGNATURE_HEADERS)
    if not webhook_id or not raw_timestamp or not signature_header:
        raise SignatureError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
            " (or their svix- equivalents)"
        )
    if not _valid_id(webhook_id):
        raise SignatureError("webhook-id must be 1-255 printable ASCII characters, no spaces")
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
        raise SignatureError("webhook-timestamp is not a unix timestamp")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("webhook-timestamp is outside the tolerance window")

    candidates: list[bytes] = []
    for entry in signature_header.split(" "):
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            candidates.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not candidates:
        raise SignatureError("no v1 signature in webhook-signature")

    content = f"{webhook_id}.{raw_timestamp}.".encode() + body
    matched = False
    for key in keys:
        expected = hmac.digest(key, content, "sha256")  # one-shot: OpenSSL's C HMAC
        for candidate in candidates:
            # Compare against every candidate, no early exit, in constant time each.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no signature matches")
    return VerifiedDelivery(webhook_id=webhook_id, timestamp=timestamp)
