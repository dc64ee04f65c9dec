"""Literal env values stay out of the CR's status, on the real API server with the shipped
RBAC: the stable pods read them from an owned Secret, across promotions and rollbacks, and
a status written before this rule is migrated when the operator starts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from cricalgo_localstack.polling import wait_for
from test_canary_cluster import (  # loaded by conftest.py
    IMAGE,
    V1,
    V2,
    V3,
    Canary,
    canary,
    healthy,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("cad_crd")]
__all__ = ["canary"]  # fixtures

KEY = "PARTNER_API_KEY"


def apply(env: Canary, version: str, secret: str) -> None:
    """CR `pay` at `version` with one literal env value, the canary analysed every second."""
    body = {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": "pay"},
        "spec": {
            "image": IMAGE.format(version),
            "database": {"secretRef": {"name": "pay-db"}},
            "redis": {"secretRef": {"name": "pay-redis"}},
            "env": [{"name": KEY, "value": secret}, {"name": "LOG_LEVEL", "value": "info"}],
            "canary": {
                "steps": [10, 25, 50, 100],
                "stepDuration": "5m",
                "analysisInterval": "1s",
                "prometheus": {"url": env.prometheus.url},
            },
        },
    }
    env.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(body))


def get(env: Canary, kind: str, name: str) -> dict[str, Any] | None:
    proc = env.kube.kubectl("get", kind, name, "-n", env.namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def env_secrets(env: Canary) -> dict[str, dict[str, Any]]:
    selector = "app.kubernetes.io/instance=pay,app.kubernetes.io/component=stable-env"
    found = json.loads(env.kubectl("get", "secrets", "-l", selector, "-o", "json").stdout)
    return {s["metadata"]["name"]: s for s in found["items"]}


def stable_value(env: Canary, deployment: str = "pay-app") -> str | None:
    """The value the stable pods get for KEY, resolved as the kubelet does: through the
    Deployment's secretKeyRef into the Secret, which must carry the CR's owner reference.
    None while the Deployment carries the literal itself."""
    body = get(env, "deployment", deployment)
    assert body is not None
    entry = {e["name"]: e for e in body["spec"]["template"]["spec"]["containers"][0]["env"]}[KEY]
    if "value" in entry:
        return None
    ref = entry["valueFrom"]["secretKeyRef"]
    secret = get(env, "secret", ref["name"])
    assert secret is not None, f"Secret {ref['name']} is missing"
    assert secret["immutable"] is True
    owners = [r["uid"] for r in secret["metadata"].get("ownerReferences") or []]
    assert owners == [env.body()["metadata"]["uid"]]
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def no_literal_in_status(env: Canary, *values: str) -> dict[str, Any]:
    status = env.status()
    text = json.dumps(status)
    for value in values:
        assert value not in text, f"{value!r} is in the status"
    return status


def test_rollbacks_and_promotions_render_the_stable_env_from_a_secret(
    canary: Canary, capsys: Any
) -> None:
    healthy(canary, V2, V3)
    apply(canary, V1, "key-one-s3cret")
    canary.wait("the first version to be stable", lambda s: s.get("observedGeneration") == 1)
    no_literal_in_status(canary, "key-one-s3cret")
    assert stable_value(canary) == "key-one-s3cret"
    assert stable_value(canary, "pay-worker") == "key-one-s3cret"
    first = set(env_secrets(canary))
    assert len(first) == 1

    # A canary with a new value runs it; rolled back, the stable keeps the first one.
    apply(canary, V2, "key-two-s3cret")
    canary.wait("step 10 %", lambda s: s.get("canaryWeight") == 10)
    assert stable_value(canary) == "key-one-s3cret"
    canary.plugin("abort", "pay", capsys=capsys)
    canary.wait("rolled back", lambda s: s.get("phase") == "RolledBack")
    no_literal_in_status(canary, "key-one-s3cret", "key-two-s3cret")
    assert stable_value(canary) == "key-one-s3cret"
    assert set(env_secrets(canary)) == first

    # Promoted, the stable reads the new value from a new Secret; the outgoing one stays
    # for the outgoing pods.
    apply(canary, V3, "key-three-s3cret")
    canary.wait(
        "step 10 %",
        lambda s: s.get("canaryWeight") == 10 and s.get("canaryImage") == IMAGE.format(V3),
    )
    canary.plugin("promote", "pay", "--full", capsys=capsys)
    canary.wait("full promotion", lambda s: s.get("stableImage") == IMAGE.format(V3))
    no_literal_in_status(canary, "key-one-s3cret", "key-two-s3cret", "key-three-s3cret")
    wait_for("the stable to take the new value", lambda: stable_value(canary) == "key-three-s3cret")
    assert stable_value(canary, "pay-worker") == "key-three-s3cret"
    secrets = set(env_secrets(canary))
    assert first < secrets
    assert len(secrets) == 2
    assert set(canary.status()["envSecrets"]) == secrets


def test_a_status_with_literal_values_is_migrated_when_the_operator_starts(canary: Canary) -> None:
    apply(canary, V1, "current-s3cret")
    canary.wait("the first version to be stable", lambda s: s.get("observedGeneration") == 1)
    unused = set(env_secrets(canary))
    canary.operator.stop()
    # A status as an operator before this rule wrote it: a literal in stableSpec (here
    # another value than the spec's, to tell which one the stable renders).
    status = canary.status()
    legacy = [{"name": KEY, "value": "legacy-s3cret"}]
    patch = json.dumps({"status": {"stableSpec": {**status["stableSpec"], "env": legacy}}})
    canary.kubectl("patch", "cad", "pay", "--subresource=status", "--type=merge", "-p", patch)
    assert "legacy-s3cret" in json.dumps(canary.status())

    canary.operator.start()
    wait_for(
        "the status to lose the literal",
        lambda: "legacy-s3cret" not in json.dumps(canary.status()),
    )
    wait_for("the stable to read it from a Secret", lambda: stable_value(canary) == "legacy-s3cret")
    # The Secret of the first snapshot is referred to by neither: it is gone.
    secrets = set(env_secrets(canary))
    assert len(secrets) == 1
    assert not secrets & unused
