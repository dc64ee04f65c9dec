"""Canaries end to end: the operator process, the real API server, a real Prometheus.

The operator runs as `python -m cricalgo_operator` (plus the canary daemon) under the
shipped namespace RBAC. Pods never run in this cluster, so the pods' metrics come from
exporters that play each track (canary_traffic.py) with the error rate the test sets,
labelled as Prometheus' pod discovery labels the real pods. Intervals are seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import canary_traffic as traffic  # loaded by conftest.py
import httpx
import pytest
import yaml
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.processes import free_port
from cricalgo_operator import plugin

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("cad_crd")]

RBAC = Path(__file__).resolve().parents[1] / "cricalgo_operator" / "rbac"
IMAGE = "registry.local/cricalgo:{}"
V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"
# Runs the operator with the canary daemon registered (main imports the handlers).
OPERATOR = (
    "import sys, cricalgo_operator.canary.daemon\n"
    "from cricalgo_operator.main import main\n"
    "sys.exit(main(sys.argv[1:]))"
)


@dataclass
class OperatorProcess:
    kubeconfig: Path
    namespace: str
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    # More flags (peering), and a name for the logs of several operators in one test.
    args: list[str] = field(default_factory=list)
    name: str = "operator"

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        liveness = free_port()
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        log = self.log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", OPERATOR, "--kubeconfig", str(self.kubeconfig),
                 "--namespace", self.namespace, "--metrics-port", "0",
                 "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--log-format", "text",
                 *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip

        def alive() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited:\n{log.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{liveness}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the operator's liveness endpoint", alive, timeout=30)

    def kill(self) -> None:
        """A crash, not a shutdown: SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Canary:
    """One CR `pay` in the test namespace, its exporters, and what the test saw."""

    kube: Any
    namespace: str
    prometheus: Any
    operator: OperatorProcess
    exporters: dict[str, Any] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def kubectl(self, *args: str, input: str | None = None) -> Any:
        return self.kube.kubectl(*args, "-n", self.namespace, input=input)

    def play(self, track: str, version: str, **traffic_args: Any) -> Any:
        """An exporter playing `track` pods running `version`, once Prometheus has its series.

        Prometheus needs 4-10 s from a new target to a rate over the analysis window (file
        discovery, two scrapes; measured on the shared 2-core machine). A canary started
        before that reads no data, and `maxInconclusive` no-data ticks (3 s at a 1 s
        interval) pause it for good: the tests' own race, not the operator's.
        """
        exporter = traffic.TrackExporter(track, version, traffic.Traffic(**traffic_args))
        job = f"canary-{self.namespace}-{track}-{version}"
        exporter.scrape_as(self.prometheus, job, self.namespace, "pay")
        self.exporters[job] = exporter
        labels = f'namespace="{self.namespace}", app="pay", track="{track}", version="{version}"'
        for metric in ("cricalgo_http_requests_total", "cricalgo_tasks_total"):
            query = f"sum(increase({metric}{{{labels}}}[5s]))"
            what = f"Prometheus to have {track} {version}'s {metric}"
            wait_for(what, lambda q=query: self._has(q))
        return exporter

    def _has(self, query: str) -> bool:
        try:
            answer = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": query})
        except httpx.TransportError:
            return False
        return bool(answer.status_code == 200 and answer.json()["data"]["result"])

    def apply(self, version: str, traffic: dict[str, Any] | None = None, **canary: Any) -> None:
        body: dict[str, Any] = {
            "apiVersion": "cricalgo.io/v1alpha1",
            "kind": "CricAlgoDeployment",
            "metadata": {"name": "pay"},
            "spec": {
                "image": IMAGE.format(version),
                "database": {"secretRef": {"name": "pay-db"}},
                "redis": {"secretRef": {"name": "pay-redis"}},
                "canary": {
                    "steps": [10, 25, 50, 100],
                    "stepDuration": "3s",
                    "analysisInterval": "1s",
                    "prometheus": {"url": self.prometheus.url},
                    **canary,
                },
            },
        }
        if traffic is not None:
            body["spec"]["traffic"] = traffic
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(body))

    def set_image(self, version: str) -> None:
        patch = json.dumps({"spec": {"image": IMAGE.format(version)}})
        self.kubectl("patch", "cad", "pay", "--type=merge", "-p", patch)

    def body(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "cad", "pay", "-o", "json").stdout)

    def status(self) -> dict[str, Any]:
        status = self.body().get("status") or {}
        self.seen.append(status)
        return status

    def wait(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 120) -> Any:
        return wait_for(
            what,
            lambda: (lambda s: s if check(s) else None)(self.status()),
            timeout,
            context=self.describe,
        )

    def describe(self) -> str:
        """The last status seen, in the words that explain a stuck canary."""
        if not self.seen:
            return "no status seen"
        s = self.seen[-1]
        analysis = s.get("lastAnalysis") or {}
        checks = ", ".join(
            f"{m.get('name')}={m.get('verdict')} ({m.get('reason', '')})"
            for m in analysis.get("metrics") or []
        )
        return (
            f"phase {s.get('phase')}, image {s.get('canaryImage')}, weight {s.get('canaryWeight')},"
            f" step {s.get('currentStep')}, failed {s.get('failedChecks')}, inconclusive"
            f" {s.get('inconclusiveChecks')}, last analysis {analysis.get('time')}"
            f" {analysis.get('verdict')}: {checks}; weights seen {self.weights()}"
        )

    def weights(self) -> list[int]:
        """Canary weights in the order seen, repeats collapsed."""
        out: list[int] = []
        for status in self.seen:
            weight = int(status.get("canaryWeight") or 0)
            if not out or out[-1] != weight:
                out.append(weight)
        return out

    def events(self) -> list[str]:
        items = json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"]
        return [e["reason"] for e in items if e["involvedObject"].get("name") == "pay"]

    def plugin(self, *args: str, capsys: Any) -> str:
        code = plugin.main([*args, "-n", self.namespace, "--kubeconfig", str(self.kube.kubeconfig)])
        assert code == 0
        return str(capsys.readouterr().out)

    def stable_first(self, traffic: dict[str, Any] | None = None, **canary: Any) -> None:
        """CR at V1, stable and Ready, before any canary."""
        self.apply(V1, traffic, **canary)
        # No pod runs here, so the phase stays Initializing; reconciled is what counts.
        self.wait("the first version to be stable", lambda s: s.get("observedGeneration") == 1)


def operator_kubeconfig(kube_cluster: Any, namespace: str) -> Path:
    """A kubeconfig for the operator's own ServiceAccount in `namespace`, bound to its
    least-privilege Role, never the admin's."""
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(RBAC / "role.yaml"))
    kube_cluster.kubectl(
        "create", "rolebinding", "cricalgo-operator", "-n", namespace,
        "--role=cricalgo-operator", f"--serviceaccount={namespace}:cricalgo-operator",
    )  # fmt: skip
    kube_cluster.kubectl("create", "serviceaccount", "cricalgo-operator", "-n", namespace)
    token = kube_cluster.kubectl(
        "create", "token", "cricalgo-operator", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    return Path(kube_cluster.kubeconfig_for_token(token))


@pytest.fixture
def canary(
    kube_cluster: Any, namespace: str, prometheus_server: Any, tmp_path: Path
) -> Iterator[Canary]:
    kubeconfig = operator_kubeconfig(kube_cluster, namespace)
    operator = OperatorProcess(kubeconfig, namespace, tmp_path)
    operator.start()
    env = Canary(kube_cluster, namespace, prometheus_server, operator)
    try:
        yield env
    finally:
        operator.stop()
        for job, exporter in env.exporters.items():
            prometheus_server.set_targets(job, [])
            exporter.stop()
        for i in range(1, operator.runs + 1):
            print(f"--- operator run {i} log tail ---")
            print((tmp_path / f"operator-{i}.log").read_text()[-4000:])


def healthy(env: Canary, *versions: str) -> None:
    env.play("stable", V1)
    for version in versions:
        env.play("canary", version)


def test_healthy_canary_walks_every_step_and_promotes(canary: Canary) -> None:
    healthy(canary, V2)
    canary.stable_first()
    canary.set_image(V2)
    status = canary.wait("promotion", lambda s: s.get("phase") == "Promoting")
    assert [w for w in canary.weights() if w] == [10, 25, 50, 100]
    assert status["stableImage"] == IMAGE.format(V2)
    checks = {m["name"]: m for m in status["lastAnalysis"]["metrics"]}
    assert checks["errorRate"]["verdict"] == "pass"
    assert checks["errorRate"]["value"] == 0
    assert checks["errorRate"]["threshold"] == 0.005
    assert {"latencyP95", "latencyP99", "queueDepth", "taskFailureRate"} <= set(checks)

    # The promotion itself: the stable Deployments now run the canary's image. The phase is
    # written first and the children are re-rendered by the next reconcile, so wait for it.
    def stable_image() -> str:
        app = json.loads(canary.kubectl("get", "deployment", "pay-app", "-o", "json").stdout)
        return str(app["spec"]["template"]["spec"]["containers"][0]["image"])

    wait_for(
        "the stable app Deployment to run the canary's image",
        lambda: stable_image() == IMAGE.format(V2),
        timeout=60,
    )
    reasons = canary.events()
    assert {"CanaryStarted", "StepPassed", "Promoting"} <= set(reasons)
    # Pre-scaled before any traffic comes back: at 100 % the stable had shrunk to one
    # replica per component; now its HPAs start from the serving capacity (no pod ever runs
    # here, so that is replicas.min) while the canary keeps its own.
    assert status["promotionReplicas"] == {"app": 0, "worker": 0}

    def hpa_min(name: str) -> int:
        hpa = json.loads(canary.kubectl("get", "hpa", name, "-o", "json").stdout)
        return int(hpa["spec"]["minReplicas"])

    wait_for(
        "the stable HPAs to be pre-scaled",
        lambda: (hpa_min("pay-app"), hpa_min("pay-worker")) == (3, 2),
        timeout=60,
    )
    assert (hpa_min("pay-app-canary"), hpa_min("pay-worker-canary")) == (3, 2)
    # The stable never becomes available here, so the canary is not removed.
    time.sleep(2)
    assert canary.status()["phase"] == "Promoting"


def test_moderate_errors_roll_back_after_max_failed_checks(canary: Canary) -> None:
    canary.play("stable", V1)
    canary.play("canary", V2, errors=5)  # 5 %: failing, under failFastFactor x threshold
    canary.stable_first(decision="count", failFastFactor=20, stepDuration="30s")
    canary.set_image(V2)
    status = canary.wait("rollback", lambda s: s.get("phase") == "RolledBack")
    assert status["canaryWeight"] == 0
    assert status["failedImage"] == IMAGE.format(V2)
    assert status["failedChecks"] == 3
    assert max(canary.weights()) == 10
    assert status["history"][-1]["outcome"] == "rolledBack"
    assert "3 failed checks" in status["history"][-1]["reason"]
    replicas = canary.kubectl(
        "get", "deployment", "pay-app-canary", "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "0"
    # Re-applying the failed image does not start a new canary by itself, not even after
    # going back to the stable image in between.
    time.sleep(3)
    assert canary.status()["phase"] == "RolledBack"
    canary.set_image(V1)
    canary.wait("the idle canary removed", lambda s: s.get("phase") == "Ready")
    canary.seen.clear()
    canary.set_image(V2)
    canary.wait("the failed image back", lambda s: s.get("canaryImage") == IMAGE.format(V2))
    time.sleep(3)
    assert canary.status()["phase"] == "RolledBack"
    assert "Progressing" not in {s.get("phase") for s in canary.seen}
    assert "FailedImage" in canary.events()
    replicas = canary.kubectl(
        "get", "deployment", "pay-app-canary", "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "0"


@pytest.mark.parametrize(
    ("decision", "reason"),
    [("count", "fail fast"), ("sequential", "sequential test: evidence of a fault")],
)
def test_severe_errors_roll_back_on_the_first_failing_tick(
    canary: Canary, decision: str, reason: str
) -> None:
    """50 % errors roll back before any check is counted, under either decision: the
    counted one by its fail-fast factor, the sequential one by its evidence boundary."""
    canary.play("stable", V1)
    canary.play("canary", V2, errors=50)
    canary.stable_first(decision=decision, stepDuration="30s")
    canary.set_image(V2)
    status = canary.wait("rollback", lambda s: s.get("phase") == "RolledBack")
    assert status["failedChecks"] == 0  # no counted failure
    assert reason in status["history"][-1]["reason"]
    assert status["canaryWeight"] == 0


def test_prometheus_down_pauses_without_promoting(
    canary: Canary, prometheus_server: Any, capsys: Any
) -> None:
    healthy(canary, V2)
    canary.stable_first(stepDuration="4s", maxInconclusive=3)
    canary.set_image(V2)
    canary.wait(
        "first passing tick", lambda s: (s.get("lastAnalysis") or {}).get("verdict") == "pass"
    )
    prometheus_server.stop()
    try:
        status = canary.wait("no-data pause", lambda s: s.get("phase") == "Paused")
        reasons = [m["reason"] for m in status["lastAnalysis"]["metrics"]]
        assert all("PrometheusUnavailable" in r for r in reasons)
        assert status["inconclusiveChecks"] == 3
    finally:
        prometheus_server.start()
    assert "Promoting" not in [s.get("phase") for s in canary.seen]
    assert canary.status()["phase"] == "Paused"
    assert "NoData" in canary.events()
    canary.plugin("resume", "pay", capsys=capsys)
    canary.wait("resumed analysis", lambda s: s.get("phase") == "Progressing")


def test_operator_restart_resumes_at_the_same_step(canary: Canary) -> None:
    healthy(canary, V2)
    canary.stable_first(stepDuration="4s")
    canary.set_image(V2)
    canary.wait("step 25 %", lambda s: s.get("canaryWeight") == 25)
    canary.operator.kill()
    canary.seen.clear()
    canary.operator.start()
    canary.wait("promotion", lambda s: s.get("phase") == "Promoting")
    steps = [s.get("currentStep", -1) for s in canary.seen]
    assert steps == sorted(steps)  # never back to an earlier step
    assert next(w for w in canary.weights() if w) in (25, 50)


def test_new_image_during_canary_restarts_from_first_step(canary: Canary) -> None:
    healthy(canary, V2, V3)
    canary.stable_first(stepDuration="3s")
    canary.set_image(V2)
    canary.wait("step 25 %", lambda s: s.get("canaryWeight") == 25)
    canary.seen.clear()
    canary.set_image(V3)
    canary.wait("v3 at 10 %", lambda s: s.get("canaryImage") == IMAGE.format(V3)
                and s.get("canaryWeight") == 10)  # fmt: skip
    status = canary.wait("promotion", lambda s: s.get("phase") == "Promoting")
    assert status["stableImage"] == IMAGE.format(V3)
    superseded = [h for h in status["history"] if h["outcome"] == "superseded"]
    assert superseded[-1]["image"] == IMAGE.format(V2)


def test_plugin_commands(canary: Canary, capsys: Any) -> None:
    healthy(canary, V2)
    canary.stable_first(stepDuration="5m")
    canary.set_image(V2)
    canary.wait("step 10 %", lambda s: s.get("canaryWeight") == 10
                and (s.get("lastAnalysis") or {}).get("verdict") == "pass")  # fmt: skip
    out = canary.plugin("status", "pay", capsys=capsys)
    assert "Progressing  weight 10%" in out
    assert "[10] 25 50 100" in out
    assert "errorRate" in out

    canary.plugin("promote", "pay", capsys=capsys)
    canary.wait("manual step to 25 %", lambda s: s.get("canaryWeight") == 25)
    annotations = canary.body()["metadata"].get("annotations") or {}
    assert "cricalgo.io/promote" not in annotations  # consumed before it was carried out

    canary.plugin("pause", "pay", capsys=capsys)
    canary.wait("paused", lambda s: s.get("phase") == "Paused")
    canary.plugin("resume", "pay", capsys=capsys)
    canary.wait("resumed", lambda s: s.get("phase") == "Progressing")

    canary.plugin("abort", "pay", capsys=capsys)
    status = canary.wait("aborted", lambda s: s.get("phase") == "RolledBack")
    assert status["canaryWeight"] == 0
    assert status["history"][-1]["outcome"] == "aborted"

    canary.plugin("retry", "pay", capsys=capsys)
    canary.wait("retried at 10 %", lambda s: s.get("phase") == "Progressing"
                and s.get("canaryWeight") == 10)  # fmt: skip

    canary.plugin("promote", "pay", "--full", capsys=capsys)
    status = canary.wait("full promotion", lambda s: s.get("phase") == "Promoting")
    assert status["stableImage"] == IMAGE.format(V2)
    assert {"ManualStep", "PausedByUser", "Resumed", "Retry", "Promoting"} <= set(canary.events())


def test_controls_act_within_seconds_even_with_a_long_interval(canary: Canary, capsys: Any) -> None:
    healthy(canary, V2)
    canary.stable_first(analysisInterval="30s", stepDuration="30m")
    # A request that applies to nothing is dropped, not kept to fire at the next canary.
    canary.plugin("promote", "pay", "--full", capsys=capsys)
    wait_for(
        "the stale request to be dropped",
        lambda: "cricalgo.io/promote" not in (canary.body()["metadata"].get("annotations") or {}),
        timeout=20,
    )
    assert "RequestIgnored" in canary.events()
    canary.set_image(V2)
    canary.wait("step 10 %", lambda s: s.get("canaryWeight") == 10, timeout=20)
    canary.plugin("abort", "pay", capsys=capsys)
    status = canary.wait("aborted", lambda s: s.get("phase") == "RolledBack")
    assert status["history"][-1]["outcome"] == "aborted"
    # Acted upon before the tick the 30 s interval had scheduled after the first step.
    step_started = datetime.fromisoformat(status["stepStartedAt"])
    aborted = datetime.fromisoformat(status["history"][-1]["finishedAt"])
    assert (aborted - step_started).total_seconds() < 30


def test_no_traffic_to_a_canary_whose_pods_are_not_ready(canary: Canary, capsys: Any) -> None:
    # No pod ever runs in this cluster, so behind a router the canary never becomes ready:
    # the mesh would answer 503 for every request routed to it.
    healthy(canary, V2)
    canary.stable_first(traffic={"provider": "istio", "hosts": ["pay.example.com"]})
    canary.set_image(V2)
    canary.wait("the canary track", lambda s: s.get("canaryImage") == IMAGE.format(V2))
    wait_for("the hold's Event", lambda: "AwaitingCanaryPods" in canary.events(), timeout=60)
    time.sleep(3)  # several one-second ticks of the hold
    status = canary.status()
    assert (status["phase"], status["canaryWeight"], status["currentStep"]) == (
        "Progressing",
        0,
        -1,
    )
    service = json.loads(canary.kubectl("get", "virtualservice", "pay", "-o", "json").stdout)
    routes = service["spec"]["http"][0]["route"]
    assert {r["destination"]["subset"]: r["weight"] for r in routes} == {"stable": 100, "canary": 0}
    assert canary.events().count("AwaitingCanaryPods") == 1  # announced once, not every tick
    # The controls still work while the canary waits.
    canary.plugin("abort", "pay", capsys=capsys)
    status = canary.wait("aborted", lambda s: s.get("phase") == "RolledBack")
    assert status["history"][-1]["outcome"] == "aborted"


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def test_a_stuck_canary_is_rolled_back_by_its_progress_deadline(canary: Canary) -> None:
    # No pod ever runs in this cluster, so behind a router the canary never becomes ready.
    canary.stable_first(
        traffic={"provider": "istio", "hosts": ["pay.example.com"]}, progressDeadline="10s"
    )
    canary.set_image(V2)
    canary.wait(
        "the hold in the conditions",
        lambda s: _condition(s, "Progressing").get("reason") == "AwaitingCanaryPods",
    )
    status = canary.wait("rolled back by the deadline", lambda s: s.get("phase") == "RolledBack")
    entry = status["history"][-1]
    assert (entry["image"], entry["outcome"]) == (IMAGE.format(V2), "rolledBack")
    assert entry["reason"].startswith("ProgressDeadlineExceeded: ")
    assert status["failedImage"] == IMAGE.format(V2)
    assert _condition(status, "Degraded")["status"] == "True"
    assert _condition(status, "Promoted")["status"] == "False"
    items = json.loads(canary.kubectl("get", "events", "-o", "json").stdout)["items"]
    warnings = [
        e["message"]
        for e in items
        if e["involvedObject"].get("name") == "pay"
        and (e["reason"], e["type"]) == ("RolledBack", "Warning")
    ]
    assert any("ProgressDeadlineExceeded" in m for m in warnings), warnings


def test_a_severe_fault_is_rolled_back_between_ticks(canary: Canary) -> None:
    canary.play("stable", V1)
    exporter = canary.play("canary", V2)
    # The counted decision's fail-fast probes; the sequential decision's own between-ticks
    # rollback is test_sequential_decision_rolls_back_a_moderate_fault_with_its_evidence.
    canary.stable_first(decision="count", analysisInterval="30s", stepDuration="30m")
    canary.set_image(V2)
    passed = canary.wait("a passing tick at 10 %", lambda s: s.get("canaryWeight") == 10
                         and (s.get("lastAnalysis") or {}).get("verdict") == "pass")  # fmt: skip
    exporter.traffic = traffic.Traffic(errors=50)
    status = canary.wait("rollback", lambda s: s.get("phase") == "RolledBack")
    assert "fail fast" in status["history"][-1]["reason"]
    assert status["failedChecks"] == 0
    # Rolled back by a probe between ticks, not by the tick the interval had scheduled.
    ticked = datetime.fromisoformat(passed["lastAnalysis"]["time"])
    rolled = datetime.fromisoformat(status["history"][-1]["finishedAt"])
    assert (rolled - ticked).total_seconds() < 30


def test_a_pipeline_waits_for_the_outcome_with_kubectl_wait(canary: Canary) -> None:
    """`kubectl wait --for=condition=Promoted` ends a CI job: True for the image that is
    stable, False once it is rolled back, never the previous image's outcome."""

    def wait(condition: str, timeout: str) -> subprocess.CompletedProcess[str]:
        return canary.kube.kubectl(
            "wait", "-n", canary.namespace, f"--for=condition={condition}", "cad/pay",
            f"--timeout={timeout}", check=False,
        )  # fmt: skip

    canary.play("stable", V1)
    canary.play("canary", V2, errors=5)  # failing checks, not fail-fast
    canary.stable_first(failFastFactor=20, stepDuration="30s")
    # No pod runs here: the first revision stays Initializing, neither promoted nor failed.
    assert wait("Promoted", "2s").returncode != 0
    canary.set_image(V2)
    # The old True is about the previous generation: a wait for success does not match it.
    assert wait("Promoted", "2s").returncode != 0
    done = wait("Promoted=False", "120s")
    assert done.returncode == 0, done.stderr
    # False from the rollback's own write (RollingBack), before the canary has drained.
    assert canary.status()["phase"] in ("RollingBack", "RolledBack")
    status = canary.wait("rolled back", lambda s: s.get("phase") == "RolledBack")
    promoted = next(c for c in status["conditions"] if c["type"] == "Promoted")
    assert promoted["reason"] == "RolledBack"
    assert IMAGE.format(V2) in promoted["message"]
    # The fixture's Prometheus scrapes every second and the analysis reads 1 s windows:
    # one scrape per window, which the operator reports.
    window = next(c for c in status["conditions"] if c["type"] == "AnalysisWindowSufficient")
    assert (window["status"], window["reason"]) == ("False", "ShorterThanTwoScrapes")
    assert "AnalysisWindowTooShort" in canary.events()
    # Back to the stable image: that image is the promoted one again, for the new generation.
    canary.set_image(V1)
    assert wait("Promoted", "60s").returncode == 0


def test_sequential_decision_rolls_back_a_moderate_fault_with_its_evidence(
    canary: Canary,
) -> None:
    canary.play("stable", V1)
    canary.play("canary", V2, errors=2)  # 2 %: 4x the 0.5 % SLO, under failFastFactor
    canary.stable_first(decision="sequential", analysisInterval="30s", stepDuration="30m")
    canary.set_image(V2)
    started = canary.wait("the canary at 10 %", lambda s: s.get("canaryWeight") == 10)
    status = canary.wait("rollback", lambda s: s.get("phase") == "RolledBack")
    assert status["history"][-1]["outcome"] == "rolledBack"
    assert "sequential test" in status["history"][-1]["reason"]
    assert status["failedChecks"] == 0  # no counted failure
    # A probe acted: well before the first 30 s tick.
    step = datetime.fromisoformat(started["stepStartedAt"])
    rolled = datetime.fromisoformat(status["history"][-1]["finishedAt"])
    assert (rolled - step).total_seconds() < 30
    error_rate = {m["name"]: m for m in status["lastAnalysis"]["metrics"]}["errorRate"]
    evidence = error_rate["evidence"]
    assert evidence["outcome"] == "fault"
    assert evidence["statistic"] >= evidence["rollbackAt"]
    assert evidence["failures"] / evidence["total"] == pytest.approx(0.02, abs=0.005)
