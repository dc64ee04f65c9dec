"""The stable snapshot's literal env values go to a Secret; the status keeps references."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

from cricalgo_operator.canary.engine import revised
from cricalgo_operator.canary.model import CanaryStatus
from cricalgo_operator.canary.runner import config_of, with_owned
from cricalgo_operator.model import Cad, pod_inputs
from cricalgo_operator.render import render
from cricalgo_operator.resync import settled
from cricalgo_operator.stable_env import (
    externalize,
    has_literal_env,
    kept_secrets,
    plan_status_patch,
    referenced_secret,
)

T0 = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
SPEC: dict[str, Any] = {
    "image": "reg/cricalgo:1.0",
    "database": {"secretRef": {"name": "pay-db"}},
    "redis": {"secretRef": {"name": "pay-redis"}},
    "env": [
        {"name": "PARTNER_API_KEY", "value": "s3cret-one"},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "k"}}},
        {"name": "LOG_LEVEL", "value": "info"},
    ],
}


def cad(spec: dict[str, Any] = SPEC, status: dict[str, Any] | None = None) -> Cad:
    body = {
        "metadata": {"name": "pay", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": spec,
        "status": status or {},
    }
    return Cad.from_body(body)


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_literal_values_move_to_an_owned_immutable_secret_named_after_them() -> None:
    c = cad()
    moved = externalize(c, pod_inputs(c.spec))
    assert "s3cret-one" not in json.dumps(moved.snapshot)
    assert not has_literal_env(moved.snapshot)
    secret = moved.secret
    assert secret is not None
    name = secret["metadata"]["name"]
    assert name.startswith("pay-env-")
    assert len(name) == len("pay-env-") + 10
    assert decoded(secret) == {"PARTNER_API_KEY": "s3cret-one", "LOG_LEVEL": "info"}
    assert secret["immutable"] is True
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    env = moved.snapshot["env"]
    assert env[0] == {
        "name": "PARTNER_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": name, "key": "PARTNER_API_KEY"}},
    }
    assert env[1] == SPEC["env"][1]  # the user's own references stay as they are
    assert referenced_secret("pay", moved.snapshot) == name
    # Same values, same Secret; another value, another one.
    assert externalize(c, pod_inputs(c.spec)).secret == secret
    other = {**SPEC, "env": [{"name": "PARTNER_API_KEY", "value": "s3cret-two"}]}
    assert externalize(c, pod_inputs(other)).secret["metadata"]["name"] != name  # type: ignore[index]


def test_duplicate_or_unusable_names_get_their_own_keys() -> None:
    env = [
        {"name": "A", "value": "1"},
        {"name": "A", "value": "2"},
        {"name": "WEIRD NAME", "value": "3"},
    ]
    moved = externalize(cad(), {"image": "x", "env": env})
    assert moved.secret is not None
    keys = [e["valueFrom"]["secretKeyRef"]["key"] for e in moved.snapshot["env"]]
    assert keys == ["A", "env-1", "env-2"]
    assert decoded(moved.secret) == {"A": "1", "env-1": "2", "env-2": "3"}


def test_no_literal_value_needs_no_secret() -> None:
    spec = {**SPEC, "env": [SPEC["env"][1]]}
    moved = externalize(cad(spec), pod_inputs(cad(spec).spec))
    assert moved.secret is None
    assert moved.snapshot == pod_inputs(cad(spec).spec)


def test_a_status_patch_never_carries_a_literal_value() -> None:
    c = cad()
    literal = pod_inputs(c.spec)
    patch, secret = plan_status_patch(c, {"phase": "Promoting", "stableSpec": literal})
    assert secret is not None
    assert "s3cret-one" not in json.dumps(patch)
    assert patch["phase"] == "Promoting"
    assert referenced_secret("pay", patch["stableSpec"]) == secret["metadata"]["name"]
    # A writer that externalized the snapshot itself still gets the Secret created, from
    # the spec's values; a snapshot naming an earlier Secret needs nothing new.
    again, same = plan_status_patch(c, {"stableSpec": patch["stableSpec"]})
    assert (again["stableSpec"], same) == (patch["stableSpec"], secret)
    earlier = externalize(c, {"image": "x", "env": [{"name": "OLD", "value": "v0"}]}).snapshot
    assert plan_status_patch(c, {"stableSpec": earlier}) == ({"stableSpec": earlier}, None)
    assert plan_status_patch(c, {"canaryWeight": 25}) == ({"canaryWeight": 25}, None)


def test_the_stable_renders_its_env_from_the_secret_and_the_canary_from_the_spec() -> None:
    base = cad()
    moved = externalize(base, pod_inputs(base.spec))
    name = referenced_secret("pay", moved.snapshot)
    newer = {
        **SPEC,
        "image": "reg/cricalgo:1.1",
        "env": [{"name": "PARTNER_API_KEY", "value": "v2"}],
    }
    c = cad(
        newer,
        {"stableRevision": "r1", "stableSpec": moved.snapshot, "canaryRevision": "r2"},
    )
    deployments = {m["metadata"]["name"]: m for m in render(c) if m["kind"] == "Deployment"}

    def env_of(deployment: str) -> dict[str, Any]:
        container = deployments[deployment]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e for e in container["env"]}

    stable = env_of("pay-app")["PARTNER_API_KEY"]
    assert stable["valueFrom"]["secretKeyRef"] == {"name": name, "key": "PARTNER_API_KEY"}
    assert env_of("pay-app-canary")["PARTNER_API_KEY"] == {"name": "PARTNER_API_KEY", "value": "v2"}


def test_a_status_with_literal_values_is_not_settled() -> None:
    c = cad(status={"phase": "Ready", "stableSpec": pod_inputs(SPEC)})
    children = [f"{m['kind']}/{m['metadata']['name']}" for m in render(c)]
    c = cad(status={**c.status, "observedGeneration": 1, "children": children})
    assert has_literal_env(c.status["stableSpec"])
    assert not settled(c, children)
    moved = externalize(c, c.status["stableSpec"]).snapshot
    assert settled(cad(status={**c.status, "stableSpec": moved}), children)


def test_a_new_snapshot_keeps_its_secret_and_the_outgoing_one_and_drops_the_rest() -> None:
    def snapshot(value: str) -> dict[str, Any]:
        return externalize(cad(), {"image": "x", "env": [{"name": "K", "value": value}]}).snapshot

    one, two, three = snapshot("1"), snapshot("2"), snapshot("3")
    name = {v: referenced_secret("pay", s) for v, s in (("1", one), ("2", two), ("3", three))}
    first = cad(status={"stableSpec": one, "envSecrets": [name["1"]]})
    assert kept_secrets(first, two) == ([name["2"], name["1"]], [])
    second = cad(status={"stableSpec": two, "envSecrets": [name["2"], name["1"]]})
    assert kept_secrets(second, three) == ([name["3"], name["2"]], [name["1"]])
    # Back to values kept already; and a snapshot without literal values.
    assert kept_secrets(second, one) == ([name["1"], name["2"]], [])
    assert kept_secrets(second, {"image": "x"}) == ([name["2"]], [name["1"]])
    # A status from before the Secrets (a literal stableSpec) knows of none to delete.
    legacy = cad(status={"stableSpec": {"image": "x", "env": [{"name": "K", "value": "0"}]}})
    assert kept_secrets(legacy, one) == ([name["1"]], [])


def test_the_engine_writes_the_snapshot_it_rendered() -> None:
    # The runner renders the decision's status before writing it: were the snapshot
    # literal there and externalized by the write, the stable pods would roll twice.
    c = cad()
    decision = revised(config_of(c), CanaryStatus.from_dict(c.status), T0)
    assert decision is not None
    after = with_owned(c.status, decision.status)
    assert not has_literal_env(after["stableSpec"])
    written, secret = plan_status_patch(c, decision.status.patch_from(c.status))
    assert written["stableSpec"] == after["stableSpec"]
    assert secret is not None  # created from the spec's values before the write
    assert render(c.with_status(after)) == render(c.with_status({**after, **written}))
