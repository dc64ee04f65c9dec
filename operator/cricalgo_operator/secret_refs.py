"""Values the operator reads from Secrets a CR names by `{name, key}`, in the CR's namespace.

Read by name with `get` only (the operator may not list or watch Secrets), at the moment the
value is used, so a rotated Secret applies from its next use. Errors name the Secret and key,
never what they hold.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .kubeapi import ApiError, KubeApi


class SecretRefError(Exception):
    """A Secret a CR names cannot be read, or lacks the key, or it is not text."""


@dataclass(frozen=True)
class SecretKey:
    """One key of one Secret in the CR's namespace."""

    name: str
    key: str

    @classmethod
    def of(cls, ref: Mapping[str, Any] | None) -> SecretKey | None:
        return cls(str(ref["name"]), str(ref["key"])) if ref else None

    def __str__(self) -> str:
        return f"Secret {self.name} key {self.key}"


def secret_value(secret: Mapping[str, Any], ref: SecretKey) -> str:
    """The key's value as text, trimmed (a trailing newline from a file is no part of it)."""
    data = secret.get("data") or {}
    if ref.key not in data:
        raise SecretRefError(f"{ref.name} has no key {ref.key}")
    try:
        return base64.b64decode(data[ref.key], validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretRefError(f"{ref} is not UTF-8 text") from None


async def read_secret(api: KubeApi, namespace: str, name: str) -> Mapping[str, Any]:
    try:
        found = await api.get("v1", "Secret", namespace, name)
    except ApiError as error:
        if error.status == 403:
            raise SecretRefError(
                f"the operator may not read Secret {name} (RBAC: get on secrets)"
            ) from None
        raise
    if found is None:
        raise SecretRefError(f"Secret {name} not found in namespace {namespace}")
    return found


async def read_value(api: KubeApi, namespace: str, ref: SecretKey) -> str:
    """One key's value, read now."""
    return secret_value(await read_secret(api, namespace, ref.name), ref)
