"""Bad deliveries get a clear 4xx with a JSON body, never a 500, and are never stored."""

from __future__ import annotations

import base64
import hmac
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import psycopg
from cricalgo_localstack.deposits import deposit_body, new_secret, signed_headers
from cricalgo_localstack.workload_processes import LiveServer
from cricalgo_workload.app import create_app
from cricalgo_workload.settings import Settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

PATH = "/api/v1/webhooks/deposit"


def inbox_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM deposit_inbox").fetchone()
        assert row is not None
        return int(row[0])


def test_signature_failures_are_401(
    client: httpx.Client, webhook_secret: str, settings: Settings
) -> None:
    body = deposit_body()
    good = signed_headers(webhook_secret, body)
    cases = {
        "tampered": (good, body.replace(b"10.50", b"99.50")),
        "wrong-secret": (signed_headers(new_secret(), body), body),
        "stale": (signed_headers(webhook_secret, body, timestamp=int(time.time()) - 400), body),
        "future": (signed_headers(webhook_secret, body, timestamp=int(time.time()) + 400), body),
        "no-headers": ({"content-type": "application/json"}, body),
    }
    for name, (headers, content) in cases.items():
        response = client.post(PATH, content=content, headers=headers)
        assert response.status_code == 401, name
        assert response.json()["error"] == "invalid_signature", name
    assert inbox_count(settings.database_url) == 0


def test_rotated_secret_on_the_server_side(settings: Settings, postgres_server: Any) -> None:
    old, new = new_secret(), new_secret()
    server = LiveServer(create_app(replace(settings, webhook_secrets=(new, old)))).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            for secret in (old, new):
                body = deposit_body()
                response = http.post(PATH, content=body, headers=signed_headers(secret, body))
                assert response.status_code == 202
    finally:
        server.stop()


def test_invalid_bodies_are_422_naming_the_field(
    client: httpx.Client, webhook_secret: str, settings: Settings
) -> None:
    cases = {
        b"not json": "body",
        b"[1, 2]": "body",
        deposit_body(amount="-5"): "amount",
        deposit_body(amount="1e9"): "amount",
        deposit_body(amount="12345678901234567890"): "amount",
        json.dumps({"user_id": "a", "amount": 5, "currency": "EUR",
                    "provider_reference": "r"}).encode(): "amount",
        deposit_body(user_id="\U0001f4b0"): "user_id",
        deposit_body(currency="\u20ac\u20ac\u20ac"): "currency",
        deposit_body(provider_reference="\u202e\u0000"): "provider_reference",
    }  # fmt: skip
    for content, field in cases.items():
        response = client.post(
            PATH, content=content, headers=signed_headers(webhook_secret, content)
        )
        assert response.status_code == 422, content
        assert response.json() == {
            "ok": False,
            "error": "invalid_body",
            "field": field,
            "detail": response.json()["detail"],
        }
    assert inbox_count(settings.database_url) == 0


def test_oversized_body_is_413(client: httpx.Client, webhook_secret: str) -> None:
    content = deposit_body(padding="x" * (256 * 1024))
    response = client.post(PATH, content=content, headers=signed_headers(webhook_secret, content))
    assert response.status_code == 413

    def chunks() -> Any:  # no Content-Length: the cap applies while streaming
        for _ in range(300):
            yield b"x" * 1024

    response = client.post(PATH, content=chunks(), headers=signed_headers(webhook_secret, b""))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_wrong_method_and_unknown_path_are_json_4xx(client: httpx.Client) -> None:
    assert client.get(PATH).status_code == 405
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["ok"] is False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
field_values = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789.-e", max_size=24),
    json_values,
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.fixed_dictionaries(
            {},
            optional={
                "user_id": field_values,
                "amount": field_values,
                "currency": field_values,
                "provider_reference": field_values,
            },
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_fuzzed_bodies_never_give_a_5xx(
    client: httpx.Client, webhook_secret: str, content: bytes
) -> None:
    response = client.post(PATH, content=content, headers=signed_headers(webhook_secret, content))
    assert response.status_code in (202, 422), response.text
    assert response.json()["ok"] is (response.status_code == 202)


def test_huge_integers_and_duplicate_keys_are_422(
    client: httpx.Client, webhook_secret: str, settings: Settings
) -> None:
    good = {"user_id": "a", "amount": "1.00", "currency": "EUR", "provider_reference": "r"}
    cases = {
        # CPython refuses to convert an integer of more than 4,300 digits (a ValueError).
        b'{"user_id": "a", "amount": "1.00", "currency": "EUR", "provider_reference": "r",'
        b' "n": ' + b"9" * 5000 + b"}": "a number longer than 100",
        b'{"user_id": "a", "amount": "1.00", "amount": "900.00", "currency": "EUR",'
        b' "provider_reference": "r"}': "duplicate key 'amount'",
        json.dumps({**good, "x": 1}).encode().replace(b"1}", b"NaN}"): "NaN is not JSON",
    }
    for content, detail in cases.items():
        response = client.post(
            PATH, content=content, headers=signed_headers(webhook_secret, content)
        )
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "body"
        assert detail in response.json()["detail"]
    assert inbox_count(settings.database_url) == 0


# The grammar of a delivery, with every part sometimes wrong: JSON members as text (so keys
# can repeat and numbers can be of any length), bodies that are not JSON at all, and the
# header sets (standard or Svix names) with ids, timestamps and signature lists.
FIELDS = ("user_id", "amount", "currency", "provider_reference")
json_numbers = st.one_of(
    st.integers().map(str),
    # Around the parser's own limits: ours (100 characters) and CPython's (4,300 digits).
    st.sampled_from([100, 101, 4300, 4301, 6000]).map(lambda n: "9" * n),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999999", "-0", "0.1e-99999"]),
)
json_scalars = st.one_of(
    json_numbers,
    st.sampled_from(["true", "false", "null"]),
    st.text(max_size=40).map(json.dumps),
    st.sampled_from(['"10.50"', '"EUR"', '"alice"', '"\\ud800"', '"\\u0000"', '"ref-1"']),
)
json_fragments = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=5), inner), max_size=3).map(
            lambda kv: "{" + ",".join(json.dumps(k) + ":" + v for k, v in kv) + "}"
        ),
    ),
    max_leaves=6,
)
members = st.lists(
    st.tuples(st.sampled_from(FIELDS) | st.text(max_size=8), json_fragments), max_size=7
)
bodies = st.one_of(
    members.map(lambda kv: "{" + ",".join(json.dumps(k) + ":" + v for k, v in kv) + "}"),
    json_fragments,
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.text(max_size=60),
).map(str.encode) | st.binary(max_size=200)
header_chars = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_categories=["Cc"])


@st.composite
def deliveries(draw: st.DrawFn, secret: str) -> tuple[dict[str, bytes], bytes]:
    content = draw(bodies)
    names = draw(st.sampled_from(["webhook", "svix"]))
    webhook_id = draw(
        st.one_of(
            st.uuids().map(lambda u: f"msg_{u.hex}"),
            st.text(header_chars, min_size=1, max_size=300),
        )
    )
    # An offset from the clock, not a timestamp: the drawn data must not depend on time.
    skew = draw(st.one_of(st.just(0), st.integers(-1000, 1000), st.none()))
    timestamp = (
        str(int(time.time()) + skew)
        if skew is not None
        else draw(st.text(alphabet="0123456789-+.e", min_size=1, max_size=20))
    )
    signed = "v1,AAAA"
    if timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 13:
        content_to_sign = f"{webhook_id}.{timestamp}.".encode() + content
        key = base64.b64decode(secret.removeprefix("whsec_"))
        digest = hmac.digest(key, content_to_sign, "sha256")
        signed = "v1," + base64.b64encode(digest).decode()
    signature = draw(
        st.one_of(
            st.just(signed),
            st.just(f"v2,abc {signed}"),
            st.text(header_chars, min_size=1, max_size=60),
        )
    )
    headers = {
        f"{names}-id": webhook_id,
        f"{names}-timestamp": timestamp,
        f"{names}-signature": signature,
        "content-type": "application/json",
    }
    return {k: v.encode("latin-1") for k, v in headers.items()}, content


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_deliveries_from_the_grammar_never_give_a_5xx(
    client: httpx.Client, webhook_secret: str, data: st.DataObject
) -> None:
    headers, content = data.draw(deliveries(webhook_secret))
    response = client.post(PATH, content=content, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.json()["ok"] is (response.status_code == 202)
