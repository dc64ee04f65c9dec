"""`cricalgo dev demo`: a canary that promotes and one that rolls back, on the local stack.

On a running stack: migrate a demo database (a pod on the local node), start the operator as
a process of the stack, apply a CricAlgoDeployment at v1, drive signed deposit webhooks
through the mesh, then update the image to v2 (healthy) and follow the canary until it is
promoted, then to v3 with an injected error rate until it is rolled back. It prints live
progress, a timeline, and writes an HTML report with a plot of weight and error rate.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .processes import ManagedProcess, free_port, pid_alive
from .stack import STATE_FILE, kubectl_cmd

NAMESPACE = "cricalgo-demo"
NAME = "payments"
HOST = "payments.local"
SECRET = "whsec_ZGVtby1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="
FAULT_RATE = "0.3"
# The stack's Prometheus scrapes every 5 s: an analysis window needs several scrapes.
STEP_SECONDS = 30
ANALYSIS_SECONDS = 15
# cricalgo-operator with the canary analysis daemon registered (the operator's own bench
# starts it this way; importing the module registers the daemon with Kopf).
OPERATOR_MAIN = (
    "import sys, cricalgo_operator.canary.daemon\n"
    "from cricalgo_operator.main import main\n"
    "sys.exit(main(sys.argv[1:]))"
)


def render_demo_cr(image: str, prometheus_url: str, fault: bool = False) -> dict[str, Any]:
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
            "worker": {"queues": ["deposits"], "concurrency": 2, "replicas": {"min": 1, "max": 1}},
            "database": {"secretRef": {"name": "payments-db", "key": "dsn"}, "poolSize": 2},
            "redis": {"secretRef": {"name": "payments-redis", "key": "url"}},
            "traffic": {"provider": "istio", "hosts": [HOST]},
            "canary": {
                "steps": [25, 50, 100],
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


@dataclass
class MeshLoad:
    """Threads posting signed deposits through the mesh, counting answers per second."""

    mesh_url: str
    threads: int = 3
    answers: list[tuple[float, int]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        import httpx
        from cricalgo_workload.testing import deposit_body, signed_headers

        with httpx.Client(base_url=self.mesh_url, headers={"Host": HOST}, timeout=10) as http:
            while not self._stop.is_set():
                body = deposit_body(user_id="alice")
                try:
                    response = http.post(
                        "/api/v1/webhooks/deposit",
                        content=body,
                        headers=signed_headers(SECRET, body),
                    )
                    status = response.status_code
                    tx_id = response.json().get("tx_id") if status == 202 else None
                except (httpx.TransportError, ValueError):
                    status, tx_id = 0, None
                with self._lock:
                    self.answers.append((time.time(), status))
                    if tx_id:
                        self.accepted.add(str(tx_id))
                self._stop.wait(0.05)

    def start(self) -> None:
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def statuses(self, since: float, until: float) -> Counter[int]:
        with self._lock:
            return Counter(status for t, status in self.answers if since <= t < until)


class Demo:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.state: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
        self.kubectl = kubectl_cmd(self.state)
        self.samples: list[dict[str, Any]] = []
        self.events: list[tuple[float, str]] = []
        self.started = time.time()
        self.operator: ManagedProcess | None = None

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
        """Namespace, a fresh database migrated by a pod on the local node, the Secrets."""
        import psycopg

        # A demo run before on this stack: start again from an empty namespace.
        self.k("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")
        self.k("create", "namespace", NAMESPACE)
        with psycopg.connect(self.state["postgres"], autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "cricalgo_demo" WITH (FORCE)')
            conn.execute('CREATE DATABASE "cricalgo_demo"')
        dsn = self.state["postgres"].rsplit("/", 1)[0] + "/cricalgo_demo"
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque"}
        self.apply(
            {**secret, "metadata": {"name": "payments-db"}, "stringData": {"dsn": dsn}},
            {
                **secret,
                "metadata": {"name": "payments-redis"},
                "stringData": {"url": self.state["redis"]},
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
        self.say("database migrated by the pod migrate on the local node")

    def start_operator(self) -> None:
        """The operator as a process of the stack; `dev down` stops it with the rest."""
        running = self.state["pids"].get("operator")
        if running and pid_alive(int(running)):
            self.say(f"operator already running (pid {running})")
            return
        operator = ManagedProcess(
            "operator",
            [
                sys.executable,
                "-c",
                OPERATOR_MAIN,
                f"--kubeconfig={self.state['kubernetes']['kubeconfig']}",
                f"--metrics-port={free_port()}",
                f"--liveness=http://127.0.0.1:{free_port()}/healthz",
                "--log-format=text",
            ],
            self.state_dir / "operator.log",
        )
        operator.start()
        self.operator = operator
        assert operator.pid is not None
        self.state["pids"]["operator"] = operator.pid
        self.state.setdefault("stop_signals", {})["operator"] = 15
        (self.state_dir / STATE_FILE).write_text(json.dumps(self.state, indent=2))
        self.say(f"operator running as a process (pid {operator.pid}, log {operator.log_path})")

    def wait_for_mesh(self, timeout: float = 60) -> None:
        """The mesh routes the host to ready pods (it follows pod readiness, like Envoy's
        endpoints, a moment after the Deployment reports them available)."""
        import httpx

        deadline = time.time() + timeout
        with httpx.Client(base_url=self.state["nginx"], headers={"Host": HOST}) as http:
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

        dsn = self.state["postgres"].rsplit("/", 1)[0] + "/cricalgo_demo"
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

    def follow(self, until: str, timeout: float) -> dict[str, Any]:
        """Print each change of phase, step, weight and SLO reading until `until` holds."""
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
            }
            self.samples.append(sample)
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
            time.sleep(2)
        raise TimeoutError(f"the canary did not reach {until} in {timeout:.0f}s (last: {last})")

    def rollout(self, image: str, fault: bool, until: str) -> tuple[float, float]:
        started = time.time()
        prometheus = self.state["prometheus"]
        self.apply(render_demo_cr(image, prometheus, fault))
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


def render_report(demo: Demo, load: MeshLoad, phases: list[tuple[str, float, float]]) -> str:
    """An HTML page: weight and mesh error rate over time (inline SVG), and the timeline."""
    start = demo.started
    end = max([s["t"] for s in demo.samples] + [start + 1])
    width, height = 900, 260

    def x(t: float) -> float:
        return 40 + (t - start) / (end - start) * (width - 60)

    def y(percent: float) -> float:
        return height - 30 - percent / 100 * (height - 50)

    weight = " ".join(f"{x(s['t']):.1f},{y(s['weight']):.1f}" for s in demo.samples)
    errors = []
    second = int(start)
    while second < end:
        answered = load.statuses(second, second + 5)
        total = sum(answered.values())
        if total:
            bad = sum(n for status, n in answered.items() if status >= 500 or status == 0)
            errors.append(f"{x(second + 2.5):.1f},{y(100 * bad / total):.1f}")
        second += 5
    rows = "".join(
        f"<tr><td>+{t - start:.0f}s</td><td>{html.escape(m)}</td></tr>" for t, m in demo.events
    )
    summary = "".join(
        f"<li>{html.escape(name)}: {b - a:.0f}s, mesh answers {dict(load.statuses(a, b))}</li>"
        for name, a, b in phases
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>CricAlgo canary demo</title></head><body style="font-family:sans-serif">
<h1>CricAlgo canary demo</h1><ul>{summary}</ul>
<svg width="{width}" height="{height}" style="border:1px solid #ccc">
<text x="45" y="15">canary weight % (blue), mesh 5xx % per 5 s (red)</text>
<line x1="40" y1="{y(0)}" x2="{width - 20}" y2="{y(0)}" stroke="#999"/>
<line x1="40" y1="{y(100)}" x2="{width - 20}" y2="{y(100)}" stroke="#eee"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{weight}"/>
<polyline fill="none" stroke="#d1242f" stroke-width="1.5" points="{" ".join(errors)}"/>
</svg><h2>Timeline</h2><table>{rows}</table></body></html>
"""


@dataclass
class DemoResult:
    """What the demo observed, for its printout and for the e2e tests."""

    outcomes: list[str] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    mesh_answers: dict[str, Counter[int]] = field(default_factory=dict)
    accepted: int = 0
    lost: int | None = None
    doubled: int | None = None
    error: str | None = None
    report: Path | None = None
    # The operator process the demo started (it outlives the demo, like the stack).
    operator: ManagedProcess | None = None

    @property
    def ok(self) -> bool:
        both = self.outcomes == ["promoted", "rolledBack"]
        return both and self.error is None and self.lost == 0 and self.doubled == 0


def run_scenarios(state_dir: Path) -> DemoResult:
    """Promote v2, roll back v3, check the ledger; write the report."""
    demo = Demo(state_dir)
    load = MeshLoad(demo.state["nginx"])
    result = DemoResult()
    try:
        demo.prepare()
        demo.start_operator()
        result.phases.append(("deploy v1", *demo.rollout("cricalgo/workload:v1", False, "ready")))
        demo.wait_for_mesh()
        load.start()
        demo.say(f"signed deposit webhooks flowing through the mesh ({HOST})")
        time.sleep(10)
        v2 = demo.rollout("cricalgo/workload:v2", False, "promoted")
        result.phases.append(("canary v2 (healthy)", *v2))
        result.outcomes.append("promoted")
        demo.say("v2 promoted")
        v3 = demo.rollout("cricalgo/workload:v3", True, "rolledBack")
        result.phases.append(("canary v3 (faulty)", *v3))
        result.outcomes.append("rolledBack")
        demo.say("v3 rolled back")
    except (TimeoutError, RuntimeError) as err:
        result.error = str(err)
        demo.say(f"demo stopped: {err}")
    finally:
        load.stop()
    result.accepted = len(load.accepted)
    result.operator = demo.operator
    if result.error is None:
        result.lost, result.doubled = demo.lost_deposits(load.accepted)
        demo.say(
            f"deposits answered 202: {result.accepted}; not credited: {result.lost}; "
            f"credited twice: {result.doubled}"
        )
    result.mesh_answers = {name: load.statuses(a, b) for name, a, b in result.phases}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result.report = state_dir / "demo" / f"report-{stamp}.html"
    result.report.parent.mkdir(parents=True, exist_ok=True)
    result.report.write_text(render_report(demo, load, result.phases))
    print("\nTimeline:")
    for t, message in demo.events:
        print(f"  +{t - demo.started:5.0f}s  {message}")
    for name, a, b in result.phases:
        print(f"  {name}: {b - a:.0f}s; mesh answers {dict(result.mesh_answers[name])}")
    print(f"\nReport: {result.report}")
    return result


def run_demo(state_dir: Path) -> int:
    """Run both canaries on the running stack; 0 when both outcomes were seen."""
    result = run_scenarios(state_dir)
    print("The stack keeps running; stop it with: cricalgo dev down")
    return 0 if result.ok else 1
