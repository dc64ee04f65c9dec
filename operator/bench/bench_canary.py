"""`make bench-canary`: the sequential and the counted decision side by side, in one run.

Not a test: prints a table. The setting is that of a new user's first canary: webhook
traffic of about 12.7 requests/s to the canary at its 10 % step (190 requests per 15 s
interval), an errorRate SLO of 0.05, a 15 s analysisInterval and maxFailedChecks 2.

Faults (severe 30 %, moderate 10 %, near-threshold 6 % of requests failing) run on the
real stack: the local Kubernetes control plane, a real Prometheus (1 s scrapes), the
operator process with its canary daemon, and exporters that play the pods
(operator/tests/canary_traffic.py, requests drawn at random at those rates). Two CRs, one
per decision, run the same faults at the same time. The fault is the canary's from its
first request at 10 %; each run measures from then to weight 0, and counts the failed
requests the canary answered meanwhile (what clients saw). A run without a rollback ends
after RUN_LIMIT_S.

The healthy canary (4 % failing, under the 5 % SLO; and one exactly at it) needs many
runs for a false-rollback rate; each is a whole canary of minutes. Those use the cheap mode
(operator/bench/canary_simulation.py): the real decide(), scheduled like the daemon (a tick
per interval, probes every interval/4), on counts drawn at the real rates, one-second
scrapes read one scrape late; a canary of four 5-minute steps at traffic proportional to
its weight. The simulation also runs the faults, many times, beside the real runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from canary_simulation import simulate
from cricalgo_localstack.binaries import ensure_toolchain
from cricalgo_localstack.control_plane import ControlPlane
from cricalgo_localstack.services import PrometheusServer, new_work_dir
from cricalgo_localstack.stack import install_crds
from cricalgo_operator.canary.controls import patch_cad, request_patch, request_stamp
from cricalgo_operator.connection import load_connection
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.naming import API_VERSION, KIND

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
IMAGE = "registry.local/cricalgo:{}"
SLO = 0.05
INTERVAL_S = 15
MAX_FAILED = 2
CANARY_RPS = 12.7  # at the 10 % step
STABLE_RPS = 9 * CANARY_RPS
RUN_LIMIT_S = 120.0
FAULTS = {"severe": 0.30, "moderate": 0.10, "near-threshold": 0.06}
# Healthy canaries: below the SLO, and exactly at it (where alpha is the bound).
HEALTHY = {"healthy 4%": 0.04, "at the SLO 5%": 0.05}
DECISIONS = ("sequential", "count")
OPERATOR = (
    "import sys, cricalgo_operator.canary.daemon\n"
    "from cricalgo_operator.main import main\n"
    "sys.exit(main(sys.argv[1:]))"
)


def canary_spec(decision: str, step_duration: str = "1h") -> dict[str, Any]:
    return {
        "decision": decision,
        "stepDuration": step_duration,
        "analysisInterval": f"{INTERVAL_S}s",
        "maxFailedChecks": MAX_FAILED,
        "slo": {"errorRate": SLO},
    }


@dataclass
class Run:
    seconds: float | None  # fault to weight 0; None: no rollback within the limit
    errors: int  # failed requests the canary answered meanwhile


def load_traffic() -> ModuleType:
    path = ROOT / "operator" / "tests" / "canary_traffic.py"
    spec = importlib.util.spec_from_file_location("canary_traffic", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["canary_traffic"] = module
    spec.loader.exec_module(module)
    return module


async def status(api: KubeApi, name: str) -> dict[str, Any]:
    body = await api.get(API_VERSION, KIND, NAMESPACE, name)
    assert body is not None
    return dict(body.get("status") or {})


async def wait(
    api: KubeApi, name: str, what: str, check: Any, limit_s: float = 180
) -> dict[str, Any] | None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        current = await status(api, name)
        if check(current):
            return current
        await asyncio.sleep(0.05)
    return None


def at_first_step(s: dict[str, Any]) -> bool:
    return s.get("phase") == "Progressing" and s.get("canaryWeight") == 10


async def measure(api: KubeApi, name: str, canary: Any, runs: int) -> dict[str, list[Run]]:
    """Every fault `runs` times on the CR `name`, whose canary `canary` plays."""
    traffic = sys.modules["canary_traffic"]
    healthy = traffic.Traffic(rate=CANARY_RPS, error_rate=0.0)
    results: dict[str, list[Run]] = {fault: [] for fault in FAULTS}
    first = True
    for fault, rate in FAULTS.items():
        for _ in range(runs):
            canary.traffic = healthy
            if not first:
                # Let the last interval's errors leave the window, then analyse again.
                await asyncio.sleep(INTERVAL_S + 3)
                await patch_cad(api, NAMESPACE, name, request_patch("retry", request_stamp()))
            first = False
            if await wait(api, name, "the canary at 10 %", at_first_step) is None:
                raise SystemExit(f"bench-canary: {name}: timed out waiting for the canary at 10 %")
            canary.traffic = traffic.Traffic(rate=CANARY_RPS, error_rate=rate)
            started, before = time.monotonic(), canary.errors_served
            done = await wait(api, name, "weight 0", lambda s: s.get("canaryWeight") == 0,
                              RUN_LIMIT_S)  # fmt: skip
            seconds = time.monotonic() - started if done is not None else None
            run = Run(seconds, canary.errors_served - before)
            canary.traffic = healthy
            results[fault].append(run)
            reason = "no rollback" if done is None else done["history"][-1].get("reason", "")
            shown = f"{seconds:6.2f} s" if seconds is not None else f"> {RUN_LIMIT_S:.0f} s"
            print(f"  {name:10} {fault:14} run {len(results[fault])}: {shown}, "
                  f"{run.errors:4} errors ({reason[:70]})", flush=True)  # fmt: skip
            if done is None:
                await patch_cad(api, NAMESPACE, name, request_patch("abort", request_stamp()))
                await wait(api, name, "aborted", lambda s: s.get("canaryWeight") == 0)
    return results


async def bench(kubeconfig: Path, prometheus: PrometheusServer, runs: int) -> dict[str, Any]:
    traffic = load_traffic()
    api = KubeApi.from_connection(load_connection(str(kubeconfig)))
    exporters = []
    try:
        canaries = {}
        for seed, decision in enumerate(DECISIONS):
            stable = traffic.TrackExporter(
                "stable", "1.0.0", traffic.Traffic(rate=STABLE_RPS, error_rate=0.0), seed=seed
            )
            canary = traffic.TrackExporter(
                "canary", "2.0.0", traffic.Traffic(rate=CANARY_RPS), seed=100 + seed
            )
            stable.scrape_as(prometheus, f"{decision}-stable", NAMESPACE, decision)
            canary.scrape_as(prometheus, f"{decision}-canary", NAMESPACE, decision)
            exporters += [stable, canary]
            canaries[decision] = canary
            await api.create(
                {
                    "apiVersion": "cricalgo.io/v1alpha1",
                    "kind": "CricAlgoDeployment",
                    "metadata": {"name": decision, "namespace": NAMESPACE},
                    "spec": {
                        "image": IMAGE.format("1.0.0"),
                        "database": {"secretRef": {"name": "db"}},
                        "redis": {"secretRef": {"name": "redis"}},
                        "canary": {
                            **canary_spec(decision),
                            "prometheus": {"url": prometheus.url},
                        },
                    },
                }
            )
        for decision in DECISIONS:
            # No pod runs here: the first revision is stable once reconciled (the phase stays
            # Initializing until stable Deployments are available).
            ready = await wait(
                api, decision, "reconciled", lambda s: s.get("observedGeneration") == 1
            )
            if ready is None:
                raise SystemExit(f"bench-canary: {decision}: the stable version never got Ready")
        # Prometheus needs a few seconds from a new target to a rate over a window.
        await asyncio.sleep(8)
        for decision in DECISIONS:
            patch = {"spec": {"image": IMAGE.format("2.0.0")}}
            await patch_cad(api, NAMESPACE, decision, patch)
        measured = await asyncio.gather(
            *(measure(api, decision, canaries[decision], runs) for decision in DECISIONS)
        )
        return dict(zip(DECISIONS, measured, strict=True))
    finally:
        await api.close()
        for exporter in exporters:
            exporter.stop()


def simulated(runs: int, healthy_runs: int) -> dict[str, dict[str, list[Any]]]:
    """The same faults, and the healthy canary, through the real decide() on drawn counts."""
    found: dict[str, dict[str, list[Any]]] = {}
    for decision in DECISIONS:
        found[decision] = {
            fault: [
                simulate(canary_spec(decision), rate, CANARY_RPS, seed, RUN_LIMIT_S)
                for seed in range(runs)
            ]
            for fault, rate in FAULTS.items()
        }
        for name, rate in HEALTHY.items():
            found[decision][name] = [
                simulate(canary_spec(decision, "5m"), rate, CANARY_RPS, seed, 25 * 60)
                for seed in range(healthy_runs)
            ]
    return found


def _times(values: list[float | None]) -> str:
    got = sorted(v for v in values if v is not None)
    if not got:
        return f"{'-':>8}{'-':>8}"
    return f"{statistics.median(got):>8.1f}{got[-1]:>8.1f}"


def report(
    real: dict[str, dict[str, list[Run]]] | None, sim: dict[str, dict[str, list[Any]]]
) -> None:
    print()
    print(f"errorRate SLO {SLO}, analysisInterval {INTERVAL_S}s, maxFailedChecks {MAX_FAILED}, "
          f"{CANARY_RPS} requests/s to the canary at 10 %")  # fmt: skip
    head = (f"{'':8}{'decision':12}{'fault':19}{'runs':>5}{'rolled':>7}{'<=1 int':>8}"
            f"{'median s':>9}{'max s':>8}{'errors':>8}")  # fmt: skip
    print(head)
    for source, table in (("real", real), ("sim", sim)):
        if table is None:
            continue
        for decision in DECISIONS:
            for fault in FAULTS:
                rows = table[decision][fault]
                seconds = [r.seconds if source == "real" else r.rolled_back_after for r in rows]
                errors = [r.errors if source == "real" else r.errors_served for r in rows]
                rolled = sum(s is not None for s in seconds)
                within = sum(s is not None and s <= INTERVAL_S for s in seconds)
                print(f"{source:8}{decision:12}{fault + f' {FAULTS[fault]:.0%}':19}"
                      f"{len(rows):>5}{rolled:>7}{within:>8}{_times(seconds)}"
                      f"{statistics.median(errors):>8.0f}")  # fmt: skip
    print()
    print("canaries within the SLO, simulated: four 5-minute steps (10, 25, 50, 100 %)")
    for name in HEALTHY:
        for decision in DECISIONS:
            rows = sim[decision][name]
            rolled = [r for r in rows if r.rolled_back_after is not None]
            promoted = sum(r.promoted for r in rows)
            rate = len(rolled) / len(rows)
            print(f"  {name:15}{decision:12} false rollbacks {len(rolled):>4} of {len(rows)} "
                  f"({rate:.1%}), promoted {promoted}")  # fmt: skip
    print("'<=1 int': rolled back within one analysisInterval of the fault's first request;")
    print("'errors': median failed requests the canary answered until weight 0.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="real runs per fault and decision")
    parser.add_argument("--sim-runs", type=int, default=200, help="simulated runs per fault")
    parser.add_argument("--healthy-runs", type=int, default=200, help="simulated healthy canaries")
    parser.add_argument("--simulate-only", action="store_true", help="no real stack")
    args = parser.parse_args()
    if args.simulate_only:
        report(None, simulated(args.sim_runs, max(20, args.healthy_runs)))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="cricalgo-bench-canary-"))
    control_plane = ControlPlane(ensure_toolchain(), scratch / "cluster")
    prometheus = PrometheusServer(new_work_dir("bench-prometheus"))
    operator: subprocess.Popen[bytes] | None = None
    try:
        print("starting the control plane and Prometheus ...", flush=True)
        control_plane.start()
        install_crds(control_plane, [ROOT / "crds" / "cricalgodeployment.yaml"])
        control_plane.kubectl("create", "namespace", NAMESPACE)
        prometheus.start()
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with (scratch / "operator.log").open("wb") as log:
            operator = subprocess.Popen(
                [sys.executable, "-c", OPERATOR, "--kubeconfig", str(control_plane.kubeconfig),
                 "--namespace", NAMESPACE, "--metrics-port", "0", "--liveness", "",
                 "--log-format", "text"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        real = asyncio.run(bench(control_plane.kubeconfig, prometheus, args.runs))
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=20)
        prometheus.stop()
        control_plane.stop()
        shutil.rmtree(prometheus.work_dir, ignore_errors=True)
        shutil.rmtree(scratch / "cluster", ignore_errors=True)
    print(f"(operator log: {scratch / 'operator.log'})")
    report(real, simulated(args.sim_runs, max(20, args.healthy_runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
