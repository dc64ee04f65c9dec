"""`make bench-operator`: how fast and how cheaply the operator reconciles (not a test).

Starts the local control plane (cricalgo_localstack), runs `python -m cricalgo_operator`
as a ServiceAccount for one namespace, and prints, each against its target:

- CR create -> all children applied (status Ready for generation 1): median and p90 of
  20, and as a ratio to a baseline measured in the same run: a client applying the
  same rendered children itself, one request per child, no operator involved;
- 100 CRs created at once: time until all are reconciled, against the same client
  applying those 100 renders at once; API writes per CR (our client's, from the
  operator's own metric, plus Kopf's patches of the CR, from the API server's counter);
- a resync: the operator restarted over the idle CRs, and the writes that caused;
- requests per second and CPU while every CR is idle (analysis on), then the same after
  growing to `--crs` CRs (1,000 by default), and the operator's peak RSS.
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
from cricalgo_operator.apply import apply_manifests
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
    # No pod runs here: the CR stays Initializing (Ready needs available Deployments).
    return bool(status.get("stableRevision")) and status.get("observedGeneration") == 1


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


async def _server_counts(server: httpx.AsyncClient) -> tuple[float, float]:
    """From the API server's own counter: Kopf's patches of CRs, and all requests."""
    # A loaded API server may take seconds to render its metrics (measured: over 5 s at a
    # load average of 15 on 2 cores).
    text = (await server.get("/metrics", timeout=60)).text
    kopf_patches = total = 0.0
    for m in re.finditer(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        labels, value = m.group(1), float(m.group(2))
        total += value
        if (
            'resource="cricalgodeployments"' in labels
            and 'subresource=""' in labels
            and 'verb="PATCH"' in labels
        ):
            kopf_patches += value
    return kopf_patches, total


async def _ours(metrics_url: str) -> tuple[float, float]:
    """The operator client's writes and reads, from its own metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(metrics_url)).text
    return (
        _metric_sum(text, "cricalgo_operator_api_writes_total{"),
        _metric_sum(text, "cricalgo_operator_api_reads_total{"),
    )


async def _writes(server: httpx.AsyncClient, metrics_url: str) -> float:
    """Every write the operator caused: its client's, plus Kopf's patches of the CRs."""
    ours, _ = await _ours(metrics_url)
    kopf, _ = await _server_counts(server)
    return ours + kopf


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _create_all(admin: KubeApi, names: list[str]) -> None:
    gate = asyncio.Semaphore(20)

    async def create(name: str) -> None:
        async with gate:
            await _create(admin, NS, name)

    await asyncio.gather(*(create(n) for n in names))


async def _wait_all_reconciled(admin: KubeApi, names: list[str]) -> None:
    pending = set(names)
    while pending:
        items = await admin.list(API, KIND, NS)
        pending -= {i["metadata"]["name"] for i in items if _reconciled(i)}
        await asyncio.sleep(0.05)


async def _idle(operator: Operator, server: httpx.AsyncClient, seconds: float = 20.0) -> str:
    """Requests per second while every CR is idle: the operator's client, the whole server."""
    writes0, reads0 = await _ours(operator.metrics_url)
    _, total0 = await _server_counts(server)
    cpu0, started = _cpu_seconds(operator.pid), time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    cpu = (_cpu_seconds(operator.pid) - cpu0) / elapsed
    writes1, reads1 = await _ours(operator.metrics_url)
    _, total1 = await _server_counts(server)
    ours = (writes1 - writes0 + reads1 - reads0) / elapsed
    # The server's count includes this bench's metrics scrapes and the control plane's
    # own leader-election renewals; nothing else runs.
    return (
        f"operator client {ours:.2f} req/s ({(writes1 - writes0) / elapsed:.2f} writes/s), "
        f"API server total {(total1 - total0) / elapsed:.2f} req/s, "
        f"operator CPU {cpu * 100:.1f} %"
    )


async def _measure(admin: KubeApi, server: httpx.AsyncClient, operator: Operator, crs: int) -> None:
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
    # 100 CRs' children applied at once by the same client.
    cads = [Cad.from_body(await _create(admin, BASELINE_NS, f"burst-{i}")) for i in range(100)]
    started = time.perf_counter()
    await asyncio.gather(*(apply_manifests(admin, render(cad)) for cad in cads))
    baseline_burst = time.perf_counter() - started

    latencies = []
    for i in range(20):
        started = time.perf_counter()
        await _create(admin, NS, f"lat-{i}")
        await _wait_reconciled(admin, f"lat-{i}")
        latencies.append(time.perf_counter() - started)

    writes_before = await _writes(server, operator.metrics_url)
    started = time.perf_counter()
    names = [f"load-{i}" for i in range(100)]
    await _create_all(admin, names)
    await _wait_all_reconciled(admin, names)
    total = time.perf_counter() - started
    await asyncio.sleep(2)  # let readiness updates triggered by the children settle
    writes = (await _writes(server, operator.metrics_url)) - writes_before

    median, base = statistics.median(latencies), statistics.median(baseline)
    base_conc = statistics.median(baseline_concurrent)
    p90 = statistics.quantiles(latencies, n=10)[-1]
    children = len(render(cads[0]))
    print(f"bench-operator (local control plane, istio provider, {children} children per CR)")
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
        f"/ concurrent baseline: {median / base_conc:.2f} (target <= 1.5)"
    )
    print(
        f"  100 CRs at once: all reconciled in {total:.1f} s ({100 / total:.1f} CR/s); "
        f"baseline client applying their children at once {baseline_burst:.1f} s; "
        f"ratio {total / baseline_burst:.2f} (target <= 2)"
    )
    print(
        f"  API writes per CR (100-CR run, incl. readiness updates): {writes / 100:.1f} "
        f"(target <= {children + 2})"
    )
    print(f"  operator peak RSS: {_peak_rss_mib(operator.pid):.0f} MiB")

    # A resync: the operator restarts (with analysis) and resumes every idle CR.
    idle_crs = len(latencies) + len(names)
    kopf_before, _ = await _server_counts(server)
    operator.restart(analysis=True)
    await asyncio.sleep(15)
    ours, _ = await _ours(operator.metrics_url)
    kopf_after, _ = await _server_counts(server)
    print(
        f"  resync ({idle_crs} idle CRs, operator restarted, 15 s): "
        f"{ours + kopf_after - kopf_before:.0f} writes (target 0)"
    )
    print(f"  idle, {idle_crs} CRs, analysis on: {await _idle(operator, server)}")
    if crs > idle_crs:
        more = [f"scale-{i}" for i in range(crs - idle_crs)]
        started = time.perf_counter()
        await _create_all(admin, more)
        await _wait_all_reconciled(admin, more)
        total = time.perf_counter() - started
        print(
            f"  {crs}-CR run: {len(more)} more CRs reconciled in {total:.1f} s "
            f"({len(more) / total:.1f} CR/s)"
        )
        print(f"  idle, {crs} CRs, analysis on: {await _idle(operator, server)}")
        print(f"  operator peak RSS ({crs} CRs): {_peak_rss_mib(operator.pid):.0f} MiB")


class Operator:
    """`python -m cricalgo_operator` as the bench's ServiceAccount, restartable."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, analysis: bool) -> None:
        metrics_port, liveness = _free_port(), _free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        args = [
            sys.executable,
            "-m",
            "cricalgo_operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            NS,
            "--metrics-port",
            str(metrics_port),
            "--liveness",
            f"http://127.0.0.1:{liveness}/healthz",
            "--log-level",
            "WARNING",
        ]
        if not analysis:
            # Reconciliation alone: weights here are set by the test, not analysis.
            args.append("--no-analysis")
        self.process = subprocess.Popen(
            args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{liveness}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the operator did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def restart(self, *, analysis: bool) -> None:
        self.stop()
        self.start(analysis=analysis)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from cricalgo_localstack.binaries import ensure_toolchain
    from cricalgo_localstack.control_plane import ControlPlane
    from cricalgo_localstack.istio_crds import istio_crds_path
    from cricalgo_localstack.kubeconfig import render_kubeconfig, write_kubeconfig
    from cricalgo_localstack.stack import install_crds

    parser = argparse.ArgumentParser(prog="bench-operator")
    parser.add_argument("--crs", type=int, default=1000, help="CRs in the scale run (total)")
    args = parser.parse_args(argv)
    # SIGTERM (timeout, make) must still run the `finally` below and stop the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    crd = Path(__file__).resolve().parents[2] / "crds" / "cricalgodeployment.yaml"
    with tempfile.TemporaryDirectory(prefix="cricalgo-bench-") as scratch:
        plane = ControlPlane(ensure_toolchain(), Path(scratch) / "cluster")
        plane.start()
        operator: Operator | None = None
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
            operator = Operator(kubeconfig, Path(scratch) / "operator.log")
            operator.start(analysis=False)
            running = operator

            async def run() -> None:
                info = load_connection(str(plane.kubeconfig))
                # A loaded machine answers slowly; the bench measures, it does not give up.
                admin = KubeApi.from_connection(info, timeout=300)
                server = httpx.AsyncClient(base_url=info.server, verify=info.as_ssl_context())
                try:
                    await _measure(admin, server, running, args.crs)
                finally:
                    await admin.close()
                    await server.aclose()

            asyncio.run(run())
        finally:
            if operator is not None:
                operator.stop()
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
