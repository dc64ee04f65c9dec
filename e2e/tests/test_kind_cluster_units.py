"""The kind variant's seam, as far as it can be checked without Docker: a clear reason to
skip, and the manifests it would deploy (the local stack's Prometheus job, in-cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cricalgo_localstack.clusters import ClusterUnavailable
from cricalgo_localstack.kind_cluster import (
    KindCluster,
    render_backing_services,
    render_gateway,
    render_prometheus,
)


def test_without_docker_and_kind_the_reason_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterUnavailable, match="needs docker, kind, kubectl; not found here"):
        KindCluster.connect(tmp_path / "work")


def test_prometheus_discovers_the_namespace_pods_with_the_local_stack_relabelling() -> None:
    manifests = {m["kind"]: m for m in render_prometheus("e2e-ns")}
    config = yaml.safe_load(manifests["ConfigMap"]["data"]["prometheus.yml"])
    job = config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["e2e-ns"]}}]
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"track", "version", "app", "component", "namespace", "pod"} <= targets
    assert config["global"]["scrape_interval"] == "5s"
    assert manifests["Role"]["rules"][0]["verbs"] == ["get", "list", "watch"]
    assert manifests["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "prometheus"


def test_backing_services_and_the_gateway_live_in_the_scenario_namespace() -> None:
    manifests = [*render_backing_services("e2e-ns"), render_gateway("e2e-ns", "payments.local")]
    assert {(m["kind"], m["metadata"]["name"]) for m in manifests} == {
        ("Deployment", "redis"),
        ("Service", "redis"),
        ("Deployment", "postgres"),
        ("Service", "postgres"),
        ("Gateway", "payments-gateway"),
    }
    assert all(m["metadata"]["namespace"] == "e2e-ns" for m in manifests)
    assert manifests[-1]["spec"]["servers"][0]["hosts"] == ["payments.local"]
