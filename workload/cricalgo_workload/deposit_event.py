"""The deposit webhook's body: parsing and validation, with errors that name the field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

# NUMERIC(20, 8) in the ledger: at most 12 integer digits and 8 decimals.
_AMOUNT = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,8})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
_REFERENCE_MAX = 128
# No field of a deposit is a JSON number; a longer one is refused before Python converts it
# (CPython refuses integers over 4,300 digits with a ValueError, a 500 until it was caught).
_NUMBER_MAX_CHARS = 100


class InvalidJson(ValueError):
    """The body is not strict JSON; the message is safe to return."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicates the last one would win, so the amount checked could differ from the
    # amount another reader of the same body sees (a parser differential): refuse them.
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJson(f"duplicate key {key!r}")
            seen.add(key)
    return data


def _number(text: str) -> Any:
    if len(text) > _NUMBER_MAX_CHARS:
        raise InvalidJson(f"a number longer than {_NUMBER_MAX_CHARS} characters")
    return Decimal(text)


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not JSON")


def loads_strict(body: bytes) -> Any:
    """`json.loads` for untrusted bodies: UTF-8 only, no duplicate keys, no NaN/Infinity,
    numbers of bounded length (as Decimal, never a float). Raises `InvalidJson`."""
    try:
        return json.loads(
            body,
            object_pairs_hook=_no_duplicate_keys,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_constant,
        )
    except InvalidJson:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        raise InvalidJson("not valid UTF-8 JSON") from None


class InvalidDeposit(ValueError):
    """The body is not a valid deposit; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DepositEvent:
    user_id: str
    amount: Decimal
    currency: str
    provider_reference: str


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise InvalidDeposit(name, "is required")
    if not isinstance(value, str):
        raise InvalidDeposit(name, "must be a string")
    return value


def parse_deposit(body: bytes) -> DepositEvent:
    """Decode and validate a deposit body:
    ``{"user_id": "...", "amount": "12.50", "currency": "USD", "provider_reference": "..."}``.

    The amount is a string on purpose: a JSON number would pass through a binary float.
    """
    try:
        data = loads_strict(body)
    except InvalidJson as exc:
        raise InvalidDeposit("body", f"is not strict JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidDeposit("body", "must be a JSON object")

    user_id = _string(data, "user_id")
    if not USER_ID.fullmatch(user_id):
        raise InvalidDeposit("user_id", "must be 1-64 characters of A-Z a-z 0-9 _ . : @ -")

    amount_text = _string(data, "amount")
    if not _AMOUNT.fullmatch(amount_text):
        raise InvalidDeposit(
            "amount", "must be a positive decimal string (max 12 digits, 8 decimals)"
        )
    try:
        amount = Decimal(amount_text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise InvalidDeposit("amount", "is not a decimal") from None
    if amount <= 0:
        raise InvalidDeposit("amount", "must be greater than zero")

    currency = _string(data, "currency")
    if not _CURRENCY.fullmatch(currency):
        raise InvalidDeposit("currency", "must be a three-letter ISO 4217 code")

    reference = _string(data, "provider_reference")
    if not reference.strip() or len(reference) > _REFERENCE_MAX or not reference.isprintable():
        raise InvalidDeposit(
            "provider_reference", f"must be 1-{_REFERENCE_MAX} printable characters"
        )
    return DepositEvent(
        user_id=user_id, amount=amount, currency=currency, provider_reference=reference
    )
