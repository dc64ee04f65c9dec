"""Every example in docs/examples/ is accepted by the real API server with the project's CRD,
and the minimal one comes back with the documented defaults filled in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cricalgo_localstack.pytest_plugin import KubeCluster

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
# The CricAlgoDeployments; secrets.yaml holds the Secrets they all read.
EXAMPLES = sorted(p for p in (REPO / "docs" / "examples").glob("*.yaml") if p.stem != "secrets")


@pytest.fixture(scope="module")
def crd_installed(kube_cluster: KubeCluster) -> None:
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/cricalgodeployments.cricalgo.io",
        "--timeout=30s",
    )


def test_there_is_an_example_per_traffic_provider() -> None:
    providers = {
        (yaml.safe_load(path.read_text())["spec"].get("traffic") or {}).get("provider", "none")
        for path in EXAMPLES
    }
    assert providers == {"istio", "nginx", "none"}
    assert "minimal.yaml" in {path.name for path in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_accepted(
    kube_cluster: KubeCluster, namespace: str, crd_installed: None, example: Path
) -> None:
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    stored = json.loads(
        kube_cluster.kubectl("get", "cad", name, "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["image"] == "cricalgo/workload:1.4.0"


def test_minimal_example_gets_the_documented_defaults(
    kube_cluster: KubeCluster, namespace: str, crd_installed: None
) -> None:
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "docs/examples/minimal.yaml"))
    spec = json.loads(
        kube_cluster.kubectl("get", "cad", "payments", "-n", namespace, "-o", "json").stdout
    )["spec"]
    assert spec["canary"]["steps"] == [10, 25, 50, 100]
    assert spec["app"]["replicas"] == {"min": 3, "max": 12}
    assert spec["worker"]["replicas"] == {"min": 2, "max": 10}
    assert spec["canary"]["slo"]["errorRate"] == 0.005
