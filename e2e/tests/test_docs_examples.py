"""Every example in docs/examples/ is accepted by the real API server with the project's CRD,
the minimal one comes back with the documented defaults filled in, and every one, applied
with the Secrets of secrets.yaml, runs: the operator renders it and its pods become Ready on
the local node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.processes import free_port
from cricalgo_localstack.pytest_plugin import KubeCluster
from cricalgo_localstack.services import PostgresServer, RedisServer

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


@pytest.fixture
def operator(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """The operator as a process watching the test's namespace (no canary analysis: the
    examples' Prometheus URLs are placeholders); yields its log."""
    liveness = free_port()
    log = tmp_path / "operator.log"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cricalgo_operator",
             "--kubeconfig", str(kube_cluster.kubeconfig), "--namespace", namespace,
             "--metrics-port", "0", "--no-analysis",
             "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--log-format", "text"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip

    def alive() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"operator exited:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{liveness}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("the operator's liveness endpoint", alive, timeout=60)
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def example_secrets(dsn: str, redis_url: str) -> str:
    """secrets.yaml as shipped, with the placeholder DSN and Redis URL pointing at the test's
    servers (the webhook secret is used as it is)."""
    secrets = list(yaml.safe_load_all((REPO / "docs/examples/secrets.yaml").read_text()))
    names = {s["metadata"]["name"]: s for s in secrets}
    names["payments-db"]["stringData"]["dsn"] = dsn
    names["payments-redis"]["stringData"]["url"] = redis_url
    return yaml.safe_dump_all(secrets)


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_until_its_pods_are_ready(
    kube_cluster: KubeCluster,
    local_node: LocalNode,
    namespace: str,
    crd_installed: None,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    operator: Path,
    example: Path,
) -> None:
    dsn = postgres_server.create_database(f"example_{example.stem}")
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "cricalgo-workload"), "migrate"],
        env={**os.environ, "DATABASE_URL": dsn}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    kube_cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=example_secrets(dsn, redis_server.url)
    )
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    done = kube_cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"cad/{name}", "--timeout=300s",
        check=False,
    )  # fmt: skip
    pods = kube_cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
    assert done.returncode == 0, f"{done.stderr}\n{pods}\n{operator.read_text()[-3000:]}"
    items = json.loads(kube_cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    ready = [
        p["metadata"]["name"]
        for p in items["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        )
    ]
    spec = json.loads(
        kube_cluster.kubectl("get", "cad", name, "-n", namespace, "-o", "json").stdout
    )
    wanted = spec["spec"]["app"]["replicas"]["min"] + spec["spec"]["worker"]["replicas"]["min"]
    assert len(ready) >= wanted, pods
    kube_cluster.kubectl("delete", "cad", name, "-n", namespace, "--wait=true", "--timeout=120s")
