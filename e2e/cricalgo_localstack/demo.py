"""`cricalgo dev demo`: a canary that promotes and one that rolls back, on the local stack
(or, for the e2e tests with `E2E_CLUSTER=kind`, on kind: see `clusters.py`).

On a running cluster: migrate a demo database (a pod), start the operator as a process,
apply a CricAlgoDeployment at v1, drive signed deposit webhooks through the mesh, then update
the image to v2 (healthy) and follow the canary until it is promoted, then to v3 with an
injected error rate until it is rolled back. While it follows a canary it samples which
track's workers take the deposit tasks. It prints live progress, a timeline and the
measurements, and writes an HTML report with plots of weight, per-track SLOs and deposits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .clusters import ClusterUnavailable, LocalCluster, ScenarioCluster, with_database
from .demo_load import MeshLoad
from .demo_report import (
    PROMOTE,
    ROLLBACK,
    DemoResult,
    fault_to_weight_zero,
    render_report,
    retried_requests,
)
from .processes import ManagedProcess, free_port, pid_alive
from .worker_split import WorkerSample, metrics_port, split_by_step, tasks_taken

NAMESPACE = "cricalgo-demo"
NAME = "payments"
HOST = "payments.local"
SECRET = "whsec_ZGVtby1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="
FAULT_RATE = "0.3"
DATABASE = "cricalgo_demo"
# The stack's Prometheus scrapes every 5 s: an analysis window needs several scrapes.
STEP_SECONDS = 30
ANALYSIS_SECONDS = 15
STEPS = [25, 50, 100]
# Workers are competing consumers of one queue: their canary share is a replica ratio, and
# 4 replicas make the steps 25 and 50 exact (1 and 2 canary workers; at 100 the stable keeps
# one warm worker, so 4 of 5).
WORKERS = 4
IMAGES = ["cricalgo/workload:v1", "cricalgo/workload:v2", "cricalgo/workload:v3"]
# The virtualenv's console scripts (the demo may run without it on PATH).
BIN_DIR = Path(sys.executable).parent


# The webhook, plus what the demo itself calls through the mesh: /healthz to see the route
# is up and the users API to register the demo's user. A production CR publishes the
# webhook alone (the default).
PUBLIC_PATHS = [
    {"path": "/api/v1/webhooks/deposit", "match": "Exact"},
    {"path": "/healthz", "match": "Exact"},
    {"path": "/api/v1/users", "match": "Prefix"},
]


def render_demo_cr(
    image: str, prometheus_url: str, fault: bool = False, traffic: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The demo's CricAlgoDeployment: small replica counts, short steps, workload SLOs."""
    env: list[dict[str, Any]] = [
        {
            "name": "CRICALGO_WEBHOOK_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "payments-webhook", "key": "secret"}},
        },
        {
            "name": "CRICALGO_API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "payments-webhook", "key": "token"}},
        },
    ]
    if fault:
        env.append({"name": "CRICALGO_FAULT_ERROR_RATE", "value": FAULT_RATE})
    return {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "image": image,
            "env": env,
            "app": {"replicas": {"min": 2, "max": 2}},
            "worker": {
                "queues": ["deposits"],
                "concurrency": 2,
                "replicas": {"min": WORKERS, "max": WORKERS},
            },
            "database": {"secretRef": {"name": "payments-db", "key": "dsn"}, "poolSize": 2},
            "redis": {"secretRef": {"name": "payments-redis", "key": "url"}},
            "traffic": {
                **(traffic or {"provider": "istio", "hosts": [HOST]}),
                "publicPaths": PUBLIC_PATHS,
            },
            "canary": {
                "steps": STEPS,
                "stepDuration": f"{STEP_SECONDS}s",
                "analysisInterval": f"{ANALYSIS_SECONDS}s",
                "maxFailedChecks": 2,
                "templates": "workload",
                "onNoData": "hold",
                "prometheus": {"url": prometheus_url},
                "slo": {"errorRate": 0.05, "latencyP95": 2, "latencyP99": 5, "queueDepth": 50},
            },
        },
    }


class Demo:
    def __init__(self, cluster: ScenarioCluster) -> None:
        self.cluster = cluster
        self.kubectl = cluster.kubectl
        self.samples: list[dict[str, Any]] = []
        self.worker_samples: list[WorkerSample] = []
        self.events: list[tuple[float, str]] = []
        self.started = time.time()
        self.operator: ManagedProcess | None = None
        self._api: Any = None
        self._ledger: Any = None  # a psycopg connection to the demo's database

    def k(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            [*self.kubectl, *args], input=input, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, *manifests: dict[str, Any]) -> None:
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
        for _ in range(80):
            try:
                self.k(
                    "apply",
                    "-n",
                    NAMESPACE,
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    "-",
                    input=text,
                )
                return
            except RuntimeError as err:
                if "serviceaccount" not in str(err):
                    raise
                time.sleep(0.25)
        raise RuntimeError("the demo namespace never got its default ServiceAccount")

    def say(self, message: str) -> None:
        elapsed = time.time() - self.started
        self.events.append((time.time(), message))
        print(f"[demo +{elapsed:5.0f}s] {message}", flush=True)

    # -- setup --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Namespace, images, a fresh database migrated by a pod, the Secrets."""
        import psycopg

        # A demo run before on this cluster: start again from an empty namespace.
        self.k("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")
        self.k("create", "namespace", NAMESPACE)
        self.cluster.prepare(NAMESPACE, IMAGES)
        with psycopg.connect(self.cluster.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        dsn = self.cluster.pod_dsn(DATABASE)
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque"}
        self.apply(
            {**secret, "metadata": {"name": "payments-db"}, "stringData": {"dsn": dsn}},
            {
                **secret,
                "metadata": {"name": "payments-redis"},
                "stringData": {"url": self.cluster.pod_redis_url()},
            },
            {
                **secret,
                "metadata": {"name": "payments-webhook"},
                "stringData": {"secret": SECRET, "token": "demo-token"},
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "migrate"},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "migrate",
                            "image": "cricalgo/workload:v1",
                            "args": ["migrate"],
                            "env": [
                                {
                                    "name": "DATABASE_URL",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "payments-db", "key": "dsn"}
                                    },
                                }
                            ],
                        }
                    ],
                },
            },
        )
        self.k(
            "wait",
            "-n",
            NAMESPACE,
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/migrate",
            "--timeout=120s",
        )
        self.say(f"database migrated by the pod migrate ({self.cluster.name} cluster)")

    def start_operator(self) -> None:
        """`cricalgo-operator` (with its canary analysis) as a process on this machine; on the
        local stack `dev down` stops it with the rest."""
        running = self.cluster.recorded_pid("operator")
        if running and pid_alive(running):
            self.say(f"operator already running (pid {running})")
            return
        program = shutil.which("cricalgo-operator", path=str(BIN_DIR)) or "cricalgo-operator"
        operator = ManagedProcess(
            "operator",
            [
                program,
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--metrics-port={free_port()}",
                f"--liveness=http://127.0.0.1:{free_port()}/healthz",
                "--log-format=text",
            ],
            self.cluster.work_dir / "operator.log",
        )
        operator.start()
        self.operator = operator
        assert operator.pid is not None
        self.cluster.record_process("operator", operator.pid)
        self.say(f"operator running as a process (pid {operator.pid}, log {operator.log_path})")

    def wait_for_mesh(self, timeout: float = 60) -> None:
        """The mesh routes the host to ready pods (it follows pod readiness, like Envoy's
        endpoints, a moment after the Deployment reports them available)."""
        import httpx

        deadline = time.time() + timeout
        with httpx.Client(base_url=self.cluster.mesh_url(), headers={"Host": HOST}) as http:
            while time.time() < deadline:
                if http.get("/healthz").status_code == 200:
                    self.say(f"the mesh routes {HOST} to the app")
                    # Deposits for a registered user are credited (others are parked).
                    registered = http.post(
                        "/api/v1/users",
                        json={"user_id": "alice"},
                        headers={"Authorization": "Bearer demo-token"},
                    )
                    self.say(f"user alice registered ({registered.status_code})")
                    return
                time.sleep(0.5)
        raise TimeoutError(f"the mesh did not route {HOST} within {timeout:.0f}s")

    def lost_deposits(self, accepted: set[str], timeout: float = 120) -> tuple[int, int]:
        """(deposits answered 202 but not credited, deposits credited more than once),
        once the workers have drained the queue or `timeout` has passed."""
        import psycopg

        dsn = with_database(self.cluster.admin_dsn(), DATABASE)
        deadline = time.time() + timeout
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                rows = conn.execute(
                    "SELECT tx_id::text, count(*) FROM ledger_entries GROUP BY tx_id"
                ).fetchall()
                credited = {tx: n for tx, n in rows}
                lost = len(accepted - set(credited))
                if lost == 0 or time.time() > deadline:
                    return lost, sum(1 for n in credited.values() if n > 1)
                time.sleep(2)

    # -- following the canary -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        cad = json.loads(self.k("get", "cad", NAME, "-n", NAMESPACE, "-o", "json"))
        status: dict[str, Any] = cad.get("status") or {}
        return status

    def worker_pods(self) -> list[dict[str, Any]]:
        from .kube_api import api_client

        if self._api is None:
            from kubernetes import client

            self._api = client.CoreV1Api(api_client(self.cluster.kubeconfig))
        response = self._api.list_namespaced_pod(
            NAMESPACE,
            label_selector=f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=worker",
            _preload_content=False,
        )
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def sample_workers(self, weight: int) -> None:
        """Record each ready worker's tasks taken so far, with the canary weight."""
        from .mesh_config import pod_ready

        pods: dict[str, tuple[str, float]] = {}
        for pod in self.worker_pods():
            port = metrics_port(pod)
            if not pod_ready(pod) or port is None:
                continue
            text = self.cluster.pod_metrics(pod, port)
            if text is not None:
                track = str(pod["metadata"]["labels"].get("track", "stable"))
                pods[pod["metadata"]["name"]] = (track, tasks_taken(text))
        self.worker_samples.append(WorkerSample(time.time(), weight, pods))

    def follow(self, until: str, timeout: float) -> dict[str, Any]:
        """Print each change of phase, step, weight and SLO reading until `until` holds;
        sample the workers' tasks on every poll (about once a second)."""
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            status = self.status()
            readings = (status.get("lastAnalysis") or {}).get("metrics") or []
            sample = {
                "t": time.time(),
                "phase": str(status.get("phase") or "-"),
                "weight": int(status.get("canaryWeight") or 0),
                "step": str(status.get("currentStep", "-")),
                "readings": {f"{r.get('name')}/{r.get('track')}": r.get("value") for r in readings},
                "tracks": self.track_readings(status),
                "credited": self.credited(),
            }
            self.samples.append(sample)
            self.sample_workers(int(status.get("canaryWeight") or 0))
            slo = " | ".join(
                f"{r.get('name')}[{r.get('track')}] {_num(r.get('value'))}"
                f" vs {_num(r.get('threshold'))} {r.get('verdict')}"
                for r in readings
            )
            line = f"{sample['phase']:<11} step {sample['step']} weight {sample['weight']:>3}%" + (
                f" | {slo}" if slo else ""
            )
            if line != last:
                self.say(line)
                last = line
            if _reached(status, until):
                return status
            time.sleep(1)
        raise TimeoutError(f"the canary did not reach {until} in {timeout:.0f}s (last: {last})")

    def track_readings(self, status: dict[str, Any]) -> dict[str, dict[str, float | None]]:
        """Error rate and p99 latency of each track now, read as the operator reads them
        (its built-in workload templates), for the report's per-track plot."""
        from cricalgo_operator.canary.promql import TEMPLATE_SETS, TemplateVars, render_query
        from cricalgo_operator.naming import image_version

        images = {"stable": status.get("stableImage"), "canary": status.get("canaryImage")}
        out: dict[str, dict[str, float | None]] = {}
        for track, image in images.items():
            if not image:
                continue
            window = f"{ANALYSIS_SECONDS}s"
            variables = TemplateVars(NAMESPACE, NAME, track, image_version(str(image)), window)
            out[track] = {
                check: self._query(render_query(TEMPLATE_SETS["workload"][check], variables))
                for check in ("errorRate", "latencyP99")
            }
        return out

    def _query(self, promql: str) -> float | None:
        """One instant query's value; None for no data or a Prometheus that does not answer
        (a gap in the plot, not a failed demo)."""
        import math

        import httpx

        try:
            answer = httpx.get(
                f"{self.cluster.prometheus_url()}/api/v1/query", params={"query": promql}, timeout=2
            ).json()
            value = float(answer["data"]["result"][0]["value"][1])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            return None
        return None if math.isnan(value) or math.isinf(value) else value

    def credited(self) -> int | None:
        """Deposits credited in the ledger so far (None while the database is out of reach)."""
        import psycopg

        try:
            if self._ledger is None:
                dsn = with_database(self.cluster.admin_dsn(), DATABASE)
                self._ledger = psycopg.connect(dsn, autocommit=True)
            row = self._ledger.execute(
                "SELECT count(DISTINCT tx_id) FROM ledger_entries"
            ).fetchone()
        except psycopg.Error:
            self.close()  # a broken connection is closed, not left to the garbage collector
            return None
        return int(row[0]) if row else None

    def close(self) -> None:
        """Close the ledger connection the samples used."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def rollout(self, image: str, fault: bool, until: str) -> tuple[float, float]:
        started = time.time()
        traffic = self.cluster.traffic(HOST)
        self.apply(render_demo_cr(image, self.cluster.prometheus_url(), fault, traffic))
        self.say(f"image -> {image}" + (f" with error rate {FAULT_RATE} injected" if fault else ""))
        self.follow(until, timeout=600)
        return started, time.time()


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def _reached(status: dict[str, Any], until: str) -> bool:
    history = status.get("history") or []
    outcome = history[-1].get("outcome") if history else None
    if until == "ready":
        return status.get("phase") == "Ready" and bool(status.get("stableImage"))
    if until == "promoted":
        return status.get("phase") == "Ready" and outcome == "promoted"
    return status.get("phase") in ("RolledBack", "Ready") and outcome == "rolledBack"


def run_scenarios(cluster: ScenarioCluster) -> DemoResult:
    """Promote v2, roll back v3, check the ledger; measure; write the report."""
    demo = Demo(cluster)
    load = MeshLoad(cluster.mesh_url(), HOST, SECRET)
    result = DemoResult(steps=STEPS, step_seconds=STEP_SECONDS)
    try:
        demo.prepare()
        demo.start_operator()
        result.phases.append(("deploy v1", *demo.rollout(IMAGES[0], False, "ready")))
        demo.wait_for_mesh()
        load.start()
        demo.say(f"signed deposit webhooks flowing through the mesh ({HOST})")
        time.sleep(10)
        v2 = demo.rollout(IMAGES[1], False, "promoted")
        result.phases.append((PROMOTE, *v2))
        result.outcomes.append("promoted")
        demo.say("v2 promoted")
        v3 = demo.rollout(IMAGES[2], True, "rolledBack")
        result.phases.append((ROLLBACK, *v3))
        result.outcomes.append("rolledBack")
        demo.say("v3 rolled back")
    except (TimeoutError, RuntimeError, ClusterUnavailable) as err:
        result.error = str(err)
        demo.say(f"demo stopped: {err}")
    finally:
        load.stop()
        demo.close()
    result.accepted = len(load.accepted)
    result.transport_errors = dict(load.errors)
    result.operator = demo.operator
    if result.error is None:
        result.lost, result.doubled = demo.lost_deposits(load.accepted)
    for name, a, b in result.phases:
        result.mesh_answers[name] = load.statuses(a, b)
        result.resent[name] = load.resent_between(a, b)
        log = cluster.access_log
        result.mesh_retried[name] = retried_requests(log, a, b) if log else None
        if name == PROMOTE:
            in_phase = [w for w in demo.worker_samples if a <= w.t <= b]
            result.worker_split = [s for s in split_by_step(in_phase) if s.weight > 0]
        if name == ROLLBACK:
            result.fault_to_weight_zero = fault_to_weight_zero(load.answers, demo.samples, a, b)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result.report = cluster.work_dir / "demo" / f"report-{stamp}.html"
    result.report.parent.mkdir(parents=True, exist_ok=True)
    result.report.write_text(render_report(demo, load, result.phases, result.measurements()))
    print("\nTimeline:")
    for t, message in demo.events:
        print(f"  +{t - demo.started:5.0f}s  {message}")
    print("\nMeasured:")
    for line in result.measurements():
        print(f"  {line}")
    print(f"\nReport: {result.report}")
    return result


def run_demo(state_dir: Path) -> int:
    """Run both canaries on the running stack; 0 when both outcomes were seen."""
    cluster = LocalCluster(state_dir)
    try:
        result = run_scenarios(cluster)
    finally:
        cluster.close()
    print("The stack keeps running; stop it with: cricalgo dev down")
    return 0 if result.ok else 1
