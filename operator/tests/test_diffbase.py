"""Kopf's diff-base essence keeps literal env values only as hashes (pure)."""

from __future__ import annotations

import hashlib

from cricalgo_operator.diffbase import redact_essence


def test_literal_values_become_hashes_and_references_stay() -> None:
    essence = {
        "spec": {
            "image": "pay:1",
            "env": [
                {"name": "TOKEN", "value": "s3cret"},
                {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}},
            ],
        },
        "metadata": {"labels": {"a": "b"}},
    }
    redacted = redact_essence(essence)
    assert "s3cret" not in str(redacted)
    assert redacted["spec"]["env"][0] == {
        "name": "TOKEN",
        "valueSha256": hashlib.sha256(b"s3cret").hexdigest(),
    }
    assert redacted["spec"]["env"][1] == essence["spec"]["env"][1]
    assert essence["spec"]["env"][0]["value"] == "s3cret"  # the input is left alone
    changed = redact_essence({"spec": {"env": [{"name": "TOKEN", "value": "other"}]}})
    assert changed["spec"]["env"] != redacted["spec"]["env"][:1]
    assert redact_essence({"spec": {"image": "x"}}) == {"spec": {"image": "x"}}
