"""`make bench-operator`: how fast and how cheaply the operator reconciles (not a test).

Starts the local control plane (cricalgo_localstack), runs `python -m cricalgo_operator`
as a ServiceAccount for one namespace, and prints:

- CR create -> all children applied (status Ready for generation 1): median and p90 of
  20, and as a ratio to a baseline measured in the same run: a client applying the
  same rendered children itself, one request per child, no operator involved;
- 100 CRs created at once: total time until all are reconciled, the operator's peak
  RSS, and API writes per CR (our client's, from the operator's own metric, plus Kopf's
  patches of the CR, from the API server's request counter).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cricalgo_operator
import httpx
from cricalgo_operator.children import apply_manifests
from cricalgo_operator.connection import load_connection
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.model import Cad
from cricalgo_operator.render import render

API = "cricalgo.io/v1alpha1"
KIND = "CricAlgoDeployment"
NS = "bench"
BASELINE_NS = "bench-baseline"
RBAC = Path(cricalgo_operator.__file__).parent / "rbac"


def _cr(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "image": "registry.local/cricalgo:1.0.0",
            "database": {"secretRef": {"name": "db"}},
            "redis": {"secretRef": {"name": "redis"}},
            "traffic": {"provider": "istio", "hosts": [f"{name}.example.com"]},
        },
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reconciled(body: dict[str, Any] | None) -> bool:
    status = (body or {}).get("status") or {}
    return status.get("phase") == "Ready" and status.get("observedGeneration") == 1


async def _create(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    body = _cr(name)
    body["metadata"]["namespace"] = namespace
    return await api.create(body)


async def _wait_reconciled(api: KubeApi, name: str) -> None:
    # Polling is the measurement here (no watch in the client): 10 ms resolution.
    while not _reconciled(await api.get(API, KIND, NS, name)):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _metric_sum(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _writes(server_client: httpx.AsyncClient, metrics_url: str) -> float:
    async with httpx.AsyncClient() as client:
        ours_text = (await client.get(metrics_url)).text
    ours = _metric_sum(ours_text, "cricalgo_operator_api_writes_total{")
    server = (await server_client.get("/metrics")).text
    kopf = sum(
        float(m.group(1))
        for m in re.finditer(
            r'^apiserver_request_total\{[^}]*resource="cricalgodeployments"[^}]*'
            r'subresource=""[^}]*verb="PATCH"[^}]*\} (\S+)$',
            server,
            re.MULTILINE,
        )
    )
    return ours + kopf


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _measure(
    admin: KubeApi, server: httpx.AsyncClient, operator_pid: int, metrics_url: str
) -> None:
    # Baseline: the same children applied by a client directly (CRs nobody watches).
    baseline = []
    for i in range(20):
        cad = Cad.from_body(await _create(admin, BASELINE_NS, f"base-{i}"))
        started = time.perf_counter()
        for manifest in render(cad):
            await admin.apply(manifest)
        baseline.append(time.perf_counter() - started)
    # Concurrent applies, as the operator does them.
    baseline_concurrent = []
    for i in range(20):
        cad = Cad.from_body(await _create(admin, BASELINE_NS, f"conc-{i}"))
        started = time.perf_counter()
        await apply_manifests(admin, render(cad))
        baseline_concurrent.append(time.perf_counter() - started)

    latencies = []
    for i in range(20):
        started = time.perf_counter()
        await _create(admin, NS, f"lat-{i}")
        await _wait_reconciled(admin, f"lat-{i}")
        latencies.append(time.perf_counter() - started)

    writes_before = await _writes(server, metrics_url)
    started = time.perf_counter()
    names = [f"load-{i}" for i in range(100)]
    gate = asyncio.Semaphore(20)

    async def create(name: str) -> None:
        async with gate:
            await _create(admin, NS, name)

    await asyncio.gather(*(create(n) for n in names))
    pending = set(names)
    while pending:
        items = await admin.list(API, KIND, NS)
        pending -= {i["metadata"]["name"] for i in items if _reconciled(i)}
        await asyncio.sleep(0.05)
    total = time.perf_counter() - started
    await asyncio.sleep(2)  # let readiness updates triggered by the children settle
    writes = (await _writes(server, metrics_url)) - writes_before

    median, base = statistics.median(latencies), statistics.median(baseline)
    base_conc = statistics.median(baseline_concurrent)
    p90 = statistics.quantiles(latencies, n=10)[-1]
    print("bench-operator (local control plane, istio provider, 12 children per CR)")
    print(
        f"  CR create -> all children applied: median {median * 1000:.0f} ms, "
        f"p90 {p90 * 1000:.0f} ms (n=20)"
    )
    print(
        f"  baseline, client applies the render itself: sequential "
        f"{base * 1000:.0f} ms, concurrent {base_conc * 1000:.0f} ms (medians, n=20)"
    )
    print(
        f"  ratio operator / sequential baseline: {median / base:.2f}; "
        f"/ concurrent baseline: {median / base_conc:.2f}"
    )
    print(f"  100 CRs at once: all reconciled in {total:.1f} s ({100 / total:.1f} CR/s)")
    print(f"  operator peak RSS: {_peak_rss_mib(operator_pid):.0f} MiB")
    print(f"  API writes per CR (100-CR run, incl. readiness updates): {writes / 100:.1f}")


def main() -> int:
    from cricalgo_localstack.binaries import ensure_toolchain
    from cricalgo_localstack.control_plane import ControlPlane
    from cricalgo_localstack.istio_crds import istio_crds_path
    from cricalgo_localstack.kubeconfig import render_kubeconfig, write_kubeconfig
    from cricalgo_localstack.stack import install_crds

    # SIGTERM (timeout, make) must still run the `finally` below and stop the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    crd = Path(__file__).resolve().parents[2] / "crds" / "cricalgodeployment.yaml"
    with tempfile.TemporaryDirectory(prefix="cricalgo-bench-") as scratch:
        plane = ControlPlane(ensure_toolchain(), Path(scratch) / "cluster")
        plane.start()
        operator: subprocess.Popen[bytes] | None = None
        try:
            install_crds(plane, [istio_crds_path(), crd])
            for ns in (NS, BASELINE_NS):
                plane.kubectl("create", "namespace", ns)
            plane.kubectl("apply", "-n", NS, "-f", str(RBAC / "role.yaml"))
            plane.kubectl("create", "serviceaccount", "cricalgo-operator", "-n", NS)
            plane.kubectl(
                "create",
                "rolebinding",
                "cricalgo-operator",
                "-n",
                NS,
                "--role=cricalgo-operator",
                f"--serviceaccount={NS}:cricalgo-operator",
            )
            token = plane.kubectl(
                "create", "token", "cricalgo-operator", "-n", NS, "--duration=1h"
            ).stdout.strip()
            kubeconfig = write_kubeconfig(
                Path(scratch) / "operator.kubeconfig",
                render_kubeconfig(plane.server, plane.ca_file, token=token, user="operator"),
            )
            metrics_port, liveness = _free_port(), _free_port()
            env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            log = (Path(scratch) / "operator.log").open("wb")
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cricalgo_operator",
                    # Reconciliation alone: weights here are set by the test, not analysis.
                    "--no-analysis",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--namespace",
                    NS,
                    "--metrics-port",
                    str(metrics_port),
                    "--liveness",
                    f"http://127.0.0.1:{liveness}/healthz",
                    "--log-level",
                    "WARNING",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{liveness}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or operator.poll() is not None:
                    raise RuntimeError("the operator did not start")
                time.sleep(0.1)

            async def run() -> None:
                admin = KubeApi.connect(str(plane.kubeconfig))
                info = load_connection(str(plane.kubeconfig))
                server = httpx.AsyncClient(base_url=info.server, verify=info.as_ssl_context())
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                try:
                    await _measure(admin, server, operator.pid, metrics_url)
                finally:
                    await admin.close()
                    await server.aclose()

            asyncio.run(run())
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=15)
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
