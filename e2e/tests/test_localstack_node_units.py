"""The local node's pure parts: env and argv resolution, image mapping, pod IPs, probes."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest
from cricalgo_localstack.containers import image_entrypoint, image_repository
from cricalgo_localstack.node import PodIPPool
from cricalgo_localstack.pod_env import EnvError, container_argv, container_env, expand
from cricalgo_localstack.probes import ProbeTracker, resolve_port

POD: dict[str, Any] = {
    "metadata": {
        "name": "app-1",
        "namespace": "shop",
        "uid": "u-1",
        "labels": {"track": "canary", "app.kubernetes.io/name": "cricalgo"},
    },
    "spec": {"nodeName": "local"},
}

OBJECTS: dict[tuple[str, str, str], dict[str, str]] = {
    ("Secret", "shop", "db"): {"dsn": base64.b64encode(b"postgresql://x").decode()},
    ("ConfigMap", "shop", "cfg"): {"POOL": "5", "MODE": "fast"},
}


def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    return OBJECTS.get((kind, namespace, name))


def test_expand_replaces_known_names_keeps_unknown_and_unescapes_double_dollar() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING) stays", env) == "$(MISSING) stays"
    assert expand("$$(A) is literal", env) == "$(A) is literal"


def test_container_env_resolves_every_source_with_later_entries_winning() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}},
            {"name": "POOL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "POOL"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "TRACK",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['track']"}},
            },
            {"name": "URL", "value": "http://$(IP):8000/$(NAME)"},
            {"name": "CFG_MODE", "value": "slow"},
        ],
    }
    env = container_env(POD, container, "127.1.0.7", lookup)
    assert env == {
        "CFG_POOL": "5",
        "CFG_MODE": "slow",
        "DSN": "postgresql://x",
        "POOL": "5",
        "IP": "127.1.0.7",
        "NAME": "app-1",
        "NS": "shop",
        "TRACK": "canary",
        "URL": "http://127.1.0.7:8000/app-1",
    }


def test_container_env_fails_on_a_missing_secret_unless_optional() -> None:
    ref = {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}
    with pytest.raises(EnvError, match="Secret shop/nope"):
        container_env(POD, {"env": [ref]}, "127.1.0.7", lookup)
    ref["valueFrom"]["secretKeyRef"]["optional"] = True  # type: ignore[index]
    assert container_env(POD, {"env": [ref]}, "127.1.0.7", lookup) == {}


def test_argv_command_replaces_the_entrypoint_and_args_are_expanded() -> None:
    env = {"QUEUE": "deposits"}
    assert container_argv({"args": ["worker", "$(QUEUE)"]}, ["cricalgo-workload"], env) == [
        "cricalgo-workload",
        "worker",
        "deposits",
    ]
    assert container_argv({"command": ["sh", "-c"], "args": ["echo"]}, ["x"], env) == [
        "sh",
        "-c",
        "echo",
    ]


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("cricalgo/workload:v2", "cricalgo/workload"),
        ("ghcr.io/acme/cricalgo/workload:v3", "acme/cricalgo/workload"),
        ("localhost:5000/cricalgo/operator@sha256:abc", "cricalgo/operator"),
        ("nginx", "nginx"),
    ],
)
def test_image_repository_strips_registry_tag_and_digest(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_only_the_projects_images_have_an_entrypoint() -> None:
    assert image_entrypoint("cricalgo/workload:v1") == ["cricalgo-workload"]
    assert image_entrypoint("ghcr.io/acme/cricalgo/operator:0.1") == ["cricalgo-operator"]
    assert image_entrypoint("docker.io/library/nginx:1.27") is None


def test_pod_ip_pool_hands_out_distinct_addresses_round_robin() -> None:
    pool = PodIPPool("127.9.9")
    first, second = pool.allocate(), pool.allocate()
    assert (first, second) == ("127.9.9.2", "127.9.9.3")
    pool.release(first)
    # A freed address is not handed out again straight away.
    assert pool.allocate() == "127.9.9.4"
    addresses = {pool.allocate() for _ in range(251)}
    assert first in addresses
    assert len(addresses) == 251
    with pytest.raises(RuntimeError, match="no free pod IP"):
        pool.allocate()


def test_resolve_port_by_number_or_container_port_name() -> None:
    ports = [{"name": "http", "containerPort": 8000}]
    assert resolve_port(9000, ports) == 9000
    assert resolve_port("http", ports) == 8000
    with pytest.raises(ValueError, match="metrics"):
        resolve_port("metrics", ports)


def test_probe_tracker_applies_initial_delay_period_and_thresholds() -> None:
    probe = {"initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 2}
    tracker = ProbeTracker(probe, started_at=100.0, passing=True)
    assert not tracker.due(104.0)
    assert tracker.due(105.0)
    assert tracker.record(False, "down", 105.0) is False
    assert tracker.passing
    assert not tracker.due(106.0)
    assert tracker.record(False, "down", 107.0) is True
    assert not tracker.passing
    assert tracker.record(True, "up", 109.0) is True
    assert tracker.passing
