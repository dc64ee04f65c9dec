"""Two operator replicas with Kopf peering, as the chart runs them (replicaCount 2).

The replica of higher priority works, the other stands by; killed mid-canary, the active
one's keep-alive expires and the standby continues the canary from the step in the CR's
status. Both run under the shipped namespace RBAC, with Kopf's peering CRDs from crds/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cricalgo_localstack.polling import wait_for
from test_canary_cluster import (  # loaded by conftest.py
    V2,
    Canary,
    OperatorProcess,
    healthy,
    operator_kubeconfig,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("cad_crd")]

PEERING_CRDS = Path(__file__).resolve().parents[2] / "crds" / "kopf-peering.yaml"
PEERING = "cricalgo-operator"
LIFETIME = 5  # seconds a killed replica's keep-alive blocks the standby


@pytest.fixture
def peers(
    kube_cluster: Any, namespace: str, prometheus_server: Any, tmp_path: Path
) -> Iterator[tuple[Canary, OperatorProcess, OperatorProcess]]:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s"
    )
    peering = f"apiVersion: kopf.dev/v1\nkind: KopfPeering\nmetadata: {{name: {PEERING}}}\n"
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=peering)
    kubeconfig = operator_kubeconfig(kube_cluster, namespace)

    def replica(name: str, priority: int) -> OperatorProcess:
        flags = ["--peering", PEERING, "--peering-priority", str(priority)]
        flags += ["--peering-lifetime", str(LIFETIME)]
        return OperatorProcess(kubeconfig, namespace, tmp_path, args=flags, name=name)

    active, standby = replica("active", 200), replica("standby", 100)
    active.start()
    standby.start()
    env = Canary(kube_cluster, namespace, prometheus_server, active)
    try:
        yield env, active, standby
    finally:
        active.stop()
        standby.stop()
        for job, exporter in env.exporters.items():
            prometheus_server.set_targets(job, [])
            exporter.stop()
        for process in (active, standby):
            for i in range(1, process.runs + 1):
                print(f"--- {process.name} run {i} log tail ---")
                print((tmp_path / f"{process.name}-{i}.log").read_text()[-4000:])


def test_the_standby_continues_a_canary_when_the_active_replica_is_killed(
    peers: tuple[Canary, OperatorProcess, OperatorProcess],
) -> None:
    canary, active, standby = peers
    # Both start paused (peering is mandatory); the one of highest priority resumes.
    resumed = "Resuming operations after the pause"
    wait_for("the active replica to resume", lambda: resumed in active.log.read_text())
    healthy(canary, V2)
    canary.stable_first(stepDuration="4s")
    canary.set_image(V2)
    at = canary.wait("step 25 %", lambda s: s.get("canaryWeight") == 25)
    step = int(at["currentStep"])
    # The standby did nothing meanwhile.
    assert resumed not in standby.log.read_text()
    assert "reconcile_cad" not in standby.log.read_text()

    active.kill()
    canary.seen.clear()
    canary.wait("promotion by the standby", lambda s: s.get("phase") == "Promoting")
    steps = [int(s.get("currentStep", -1)) for s in canary.seen]
    assert steps == sorted(steps)
    assert steps[0] >= step  # from the step it was on, never from the start
    assert next(w for w in canary.weights() if w) in (25, 50)
    assert resumed in standby.log.read_text()
