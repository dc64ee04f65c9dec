"""Deposit body validation (pure)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cricalgo_workload.deposit_event import InvalidDeposit, parse_deposit
from hypothesis import given
from hypothesis import strategies as st

GOOD = {"user_id": "alice", "amount": "10.50", "currency": "EUR", "provider_reference": "ref-1"}


def body(**changes: object) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_valid_body() -> None:
    event = parse_deposit(body())
    assert (event.user_id, event.amount, event.currency) == ("alice", Decimal("10.50"), "EUR")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (b"\xff\xfe\x00", "body"),
        (b"[]", "body"),
        (b'"x"', "body"),
        (body(user_id=...), "user_id"),
        (body(user_id=5), "user_id"),
        (body(user_id=""), "user_id"),
        (body(user_id="x" * 65), "user_id"),
        (body(user_id="al ice"), "user_id"),
        (body(user_id="\u0430lice"), "user_id"),
        (body(amount=10.5), "amount"),
        (body(amount="-1"), "amount"),
        (body(amount="0"), "amount"),
        (body(amount="0.000"), "amount"),
        (body(amount="1e3"), "amount"),
        (body(amount="NaN"), "amount"),
        (body(amount="Infinity"), "amount"),
        (body(amount="1000000000000"), "amount"),
        (body(amount="1.123456789"), "amount"),
        (body(amount="01"), "amount"),
        (body(amount=" 1"), "amount"),
        (body(amount="\u0661"), "amount"),
        (body(amount=None), "amount"),
        (body(currency="eur"), "currency"),
        (body(currency="EURO"), "currency"),
        (body(currency=978), "currency"),
        (body(provider_reference=""), "provider_reference"),
        (body(provider_reference="a\u0000b"), "provider_reference"),
        (body(provider_reference="\ud800"), "provider_reference"),
        (body(provider_reference="r" * 129), "provider_reference"),
        (body(provider_reference=["r"]), "provider_reference"),
    ],
)
def test_invalid_bodies_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidDeposit) as info:
        parse_deposit(raw)
    assert info.value.field == field


def test_largest_amount_and_unicode_reference_pass() -> None:
    event = parse_deposit(body(amount="999999999999.99999999", provider_reference="réf-✓"))
    assert event.amount == Decimal("999999999999.99999999")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_either_valid_or_invalid_deposit(raw: bytes) -> None:
    outcome: object
    try:
        outcome = parse_deposit(raw).amount > 0
    except InvalidDeposit as exc:
        outcome = exc.field
    assert outcome in {True, "body", "user_id", "amount", "currency", "provider_reference"}
