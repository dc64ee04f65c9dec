"""Standard Webhooks verification (pure)."""

from __future__ import annotations

import pytest
from cricalgo_localstack.deposits import new_secret
from cricalgo_workload.signatures import SignatureError, decode_secret, sign, verify

BODY = b'{"user_id": "alice", "amount": "1.00", "currency": "EUR", "provider_reference": "r"}'
NOW = 1_700_000_000


def headers(secret: str, body: bytes = BODY, ts: int = NOW, wid: str = "msg_1") -> dict[str, str]:
    return {
        "webhook-id": wid,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, wid, ts, body),
    }


def test_valid_signature_passes() -> None:
    secret = new_secret()
    delivery = verify([decode_secret(secret)], headers(secret), BODY, now=NOW)
    assert (delivery.webhook_id, delivery.timestamp) == ("msg_1", NOW)


def test_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks reference implementation's test suite.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_any_of_several_signatures_passes_during_rotation() -> None:
    old, new = new_secret(), new_secret()
    signature = " ".join(
        [sign(old, "msg_1", NOW, BODY), "v2,ignored", sign(new, "msg_1", NOW, BODY)]
    )
    h = {**headers(old), "webhook-signature": signature}
    assert verify([decode_secret(new)], h, BODY, now=NOW).webhook_id == "msg_1"
    # And a receiver that holds both secrets accepts a sender that signs with either.
    assert verify([decode_secret(old), decode_secret(new)], headers(new), BODY, now=NOW)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, s: (h, BODY.replace(b"1.00", b"9.00")), "no signature matches"),
        (lambda h, s: ({**h, "webhook-id": "msg_2"}, BODY), "no signature matches"),
        (lambda h, s: (headers(new_secret()), BODY), "no signature matches"),
        (lambda h, s: ({**h, "webhook-signature": "v1,!!notbase64"}, BODY), "no v1 signature"),
        (lambda h, s: ({**h, "webhook-signature": "v2,abc"}, BODY), "no v1 signature"),
        (lambda h, s: (headers(s, ts=NOW - 301), BODY), "outside the tolerance"),
        (lambda h, s: (headers(s, ts=NOW + 301), BODY), "outside the tolerance"),
        (lambda h, s: ({**h, "webhook-timestamp": "12a"}, BODY), "not a unix timestamp"),
        (lambda h, s: ({**h, "webhook-timestamp": "-5"}, BODY), "not a unix timestamp"),
        (lambda h, s: ({k: v for k, v in h.items() if k != "webhook-id"}, BODY), "missing"),
        (lambda h, s: ({k: v for k, v in h.items() if k != "webhook-signature"}, BODY), "missing"),
        (lambda h, s: ({k: v for k, v in h.items() if k != "webhook-timestamp"}, BODY), "missing"),
    ],
    ids=[
        "tampered-body",
        "other-id",
        "wrong-secret",
        "bad-base64",
        "unknown-version",
        "stale",
        "future",
        "non-numeric-ts",
        "negative-ts",
        "no-id",
        "no-signature",
        "no-timestamp",
    ],
)
def test_rejections(mutate: object, reason: str) -> None:
    secret = new_secret()
    h, body = mutate(headers(secret), secret)  # type: ignore[operator]
    with pytest.raises(SignatureError, match=reason):
        verify([decode_secret(secret)], h, body, now=NOW)


def test_timestamp_at_the_edge_of_the_window_passes() -> None:
    secret = new_secret()
    for ts in (NOW - 300, NOW + 300):
        assert verify([decode_secret(secret)], headers(secret, ts=ts), BODY, now=NOW)


def test_secret_must_be_base64() -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_secret("whsec_not base64!")
