"""`make bench-canary`: time from fault start to weight 0, severe and moderate, in one run.

Not a test: prints a table. The real stack: the local Kubernetes control plane, a real
Prometheus (1 s scrapes), the operator process with its canary daemon, and exporters that
play the canary pods (operator/tests/canary_traffic.py). Each run starts a healthy canary
at 10 %, then switches the canary's traffic to a fault and measures until the CR's
status says weight 0. The bound printed beside it is the one Flagger documents for its
analysis: interval x threshold (here analysisInterval x maxFailedChecks; one interval
for a fault beyond failFastFactor x its threshold, which the daemon's fail-fast probes
also judge between ticks, every interval/4).
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
from pathlib import Path
from types import ModuleType
from typing import Any

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
INTERVAL_S = 2
MAX_FAILED = 3
OPERATOR = (
    "import sys, cricalgo_operator.canary.daemon\n"
    "from cricalgo_operator.main import main\n"
    "sys.exit(main(sys.argv[1:]))"
)
# errors per 100 requests: severe is 100x the 0.5 % SLO, moderate 4x (under failFastFactor 5)
FAULTS = {"severe": 50, "moderate": 2}


def load_traffic() -> ModuleType:
    path = ROOT / "operator" / "tests" / "canary_traffic.py"
    spec = importlib.util.spec_from_file_location("canary_traffic", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["canary_traffic"] = module
    spec.loader.exec_module(module)
    return module


async def status(api: KubeApi) -> dict[str, Any]:
    body = await api.get(API_VERSION, KIND, NAMESPACE, "pay")
    assert body is not None
    return dict(body.get("status") or {})


async def wait(api: KubeApi, what: str, check: Any, limit_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        current = await status(api)
        if check(current):
            return current
        await asyncio.sleep(0.05)
    raise SystemExit(f"bench-canary: timed out waiting for {what}")


def passing_at_10(s: dict[str, Any]) -> bool:
    verdict = (s.get("lastAnalysis") or {}).get("verdict")
    return s.get("phase") == "Progressing" and s.get("canaryWeight") == 10 and verdict == "pass"


async def measure(api: KubeApi, canary: Any, healthy: Any, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in FAULTS}
    first = True
    for name, errors in FAULTS.items():
        for _ in range(runs):
            canary.traffic = healthy
            if not first:
                # Let the error window drain, then analyse the same image again.
                await asyncio.sleep(INTERVAL_S + 6)
                patch = request_patch("retry", request_stamp())
                await patch_cad(api, NAMESPACE, "pay", patch)
            first = False
            await wait(api, "a healthy canary at 10 %", passing_at_10)
            canary.traffic = type(healthy)(errors=errors)
            started = time.monotonic()
            done = await wait(api, "weight 0", lambda s: s.get("canaryWeight") == 0, 60)
            results[name].append(time.monotonic() - started)
            print(
                f"  {name:8} run {len(results[name])}: {results[name][-1]:.2f} s "
                f"({(done.get('history') or [{}])[-1].get('reason', '')[:60]})",
                flush=True,
            )
    return results


async def bench(kubeconfig: Path, prometheus: PrometheusServer, runs: int) -> None:
    traffic = load_traffic()
    healthy = traffic.Traffic()
    stable = traffic.TrackExporter("stable", "1.0.0", healthy)
    canary = traffic.TrackExporter("canary", "2.0.0", healthy)
    stable.scrape_as(prometheus, "bench-stable", NAMESPACE, "pay")
    canary.scrape_as(prometheus, "bench-canary", NAMESPACE, "pay")
    api = KubeApi.from_connection(load_connection(str(kubeconfig)))
    try:
        body = {
            "apiVersion": "cricalgo.io/v1alpha1",
            "kind": "CricAlgoDeployment",
            "metadata": {"name": "pay", "namespace": NAMESPACE},
            "spec": {
                "image": IMAGE.format("1.0.0"),
                "database": {"secretRef": {"name": "db"}},
                "redis": {"secretRef": {"name": "redis"}},
                "canary": {
                    "stepDuration": "1h",
                    "analysisInterval": f"{INTERVAL_S}s",
                    "maxFailedChecks": MAX_FAILED,
                    "prometheus": {"url": prometheus.url},
                },
            },
        }
        await api.create(body)
        await wait(api, "the stable version", lambda s: s.get("phase") == "Ready")
        await patch_cad(api, NAMESPACE, "pay", {"spec": {"image": IMAGE.format("2.0.0")}})
        results = await measure(api, canary, healthy, runs)
    finally:
        await api.close()
        stable.stop()
        canary.stop()
    bounds = {"severe": INTERVAL_S, "moderate": INTERVAL_S * MAX_FAILED}
    print()
    print(f"analysisInterval {INTERVAL_S}s, maxFailedChecks {MAX_FAILED}, scrape 1s, window 5s")
    print(f"{'fault':10}{'errors':>8}{'runs':>6}{'median s':>10}{'max s':>8}"
          f"{'bound s':>9}{'median/bound':>14}")  # fmt: skip
    for name, times in results.items():
        bound = bounds[name]
        median = statistics.median(times)
        print(f"{name:10}{FAULTS[name]:>7}%{len(times):>6}{median:>10.2f}{max(times):>8.2f}"
              f"{bound:>9}{median / bound:>14.2f}")  # fmt: skip
    print("bound: Flagger's interval x threshold (severe: one interval, fail fast). Severe")
    print("faults are also judged by probes every interval/4 between ticks; what remains is")
    print("the metrics pipeline: up to one scrape, the 5 s window's ratio climbing past the")
    print("threshold, the queries and the status write")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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
        asyncio.run(bench(control_plane.kubeconfig, prometheus, args.runs))
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=20)
        prometheus.stop()
        control_plane.stop()
        shutil.rmtree(prometheus.work_dir, ignore_errors=True)
        shutil.rmtree(scratch / "cluster", ignore_errors=True)
    print(f"(operator log: {scratch / 'operator.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
