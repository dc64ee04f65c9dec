"""Where the canary scenario runs: the local stack, or a kind cluster (`E2E_CLUSTER=kind`).

The scenario (`demo.py`) is the same on both; what differs is behind `ScenarioCluster`:
how the project's images get to the nodes, where webhook traffic enters the mesh, how the
operator reaches Prometheus, where Redis and PostgreSQL live and how a pod's metrics are read
(docs/development/local-stack.md, "The e2e tests on kind", has the table).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .stack import STATE_FILE, kubectl_cmd


class ClusterUnavailable(RuntimeError):
    """The cluster asked for cannot be used here; the message says why (tests skip on it)."""


class ScenarioCluster(Protocol):
    """What the canary scenario needs from the cluster it runs on."""

    name: str
    kubeconfig: Path
    kubectl: list[str]
    # Where the scenario writes the operator's log and its report.
    work_dir: Path
    # The mesh's access log, when the scenario can read it (to count retried requests).
    access_log: Path | None

    def prepare(self, namespace: str, images: Sequence[str]) -> None:
        """Make the images runnable and the backing services reachable for `namespace`."""

    def mesh_url(self) -> str:
        """Where webhook traffic enters the mesh (the route is chosen by the Host header)."""

    def prometheus_url(self) -> str:
        """Prometheus as the operator (a process on this machine) reaches it."""

    def admin_dsn(self) -> str:
        """PostgreSQL's maintenance database, as this process reaches it."""

    def pod_dsn(self, database: str) -> str:
        """A database of that PostgreSQL, as the cluster's pods reach it."""

    def pod_redis_url(self) -> str:
        """Redis, as the cluster's pods reach it."""

    def traffic(self, host: str) -> dict[str, Any]:
        """The CricAlgoDeployment's `traffic` section routing `host`."""

    def pod_metrics(self, pod: Mapping[str, Any], port: int) -> str | None:
        """The text of a pod's `/metrics` on `port`, or None if it does not answer."""

    def record_process(self, name: str, pid: int) -> None:
        """Note a process the scenario started on this machine (the operator)."""

    def recorded_pid(self, name: str) -> int | None:
        """The pid `record_process` noted for `name` (in an earlier run too), if any."""

    def close(self) -> None:
        """Stop what `prepare` started (port-forwards); the cluster itself stays."""


def with_database(dsn: str, database: str) -> str:
    """The same server's `database`: `postgresql://u@h:p/postgres` -> `.../<database>`."""
    return dsn.rsplit("/", 1)[0] + "/" + database


class LocalCluster:
    """The running local stack of `state_dir` (`cricalgo dev up`)."""

    name = "local"

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / STATE_FILE
        if not path.exists():
            raise ClusterUnavailable(f"no local stack recorded in {state_dir} (cricalgo dev up)")
        self.state: dict[str, Any] = json.loads(path.read_text())
        self.work_dir = state_dir
        self.kubeconfig = Path(self.state["kubernetes"]["kubeconfig"])
        self.kubectl = kubectl_cmd(self.state)
        self.access_log: Path | None = state_dir / "nginx" / "mesh-access.log"
        self._http: Any = None

    def prepare(self, namespace: str, images: Sequence[str]) -> None:
        """Nothing to do: the local node runs `cricalgo/*` images as the project's console
        scripts, and Redis and PostgreSQL are the stack's."""

    def mesh_url(self) -> str:
        return str(self.state["nginx"])

    def prometheus_url(self) -> str:
        return str(self.state["prometheus"])

    def admin_dsn(self) -> str:
        return str(self.state["postgres"])

    def pod_dsn(self, database: str) -> str:
        # Pods are processes of this machine: they reach the stack's server as we do.
        return with_database(self.admin_dsn(), database)

    def pod_redis_url(self) -> str:
        return str(self.state["redis"])

    def traffic(self, host: str) -> dict[str, Any]:
        return {"provider": "istio", "hosts": [host]}

    def pod_metrics(self, pod: Mapping[str, Any], port: int) -> str | None:
        import httpx

        if self._http is None:
            self._http = httpx.Client(timeout=2)
        try:
            response = self._http.get(f"http://{pod['status']['podIP']}:{port}/metrics")
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def record_process(self, name: str, pid: int) -> None:
        """In `stack.json`, so that `cricalgo dev down` stops it with the stack."""
        self.state["pids"][name] = pid
        self.state.setdefault("stop_signals", {})[name] = int(signal.SIGTERM)
        (self.work_dir / STATE_FILE).write_text(json.dumps(self.state, indent=2))

    def recorded_pid(self, name: str) -> int | None:
        pid = self.state["pids"].get(name)
        return int(pid) if pid else None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def scenario_cluster(state_dir: Path) -> ScenarioCluster:
    """The cluster `E2E_CLUSTER` names (`local`, the default, or `kind`)."""
    which = os.environ.get("E2E_CLUSTER", "local")
    if which == "kind":
        from .kind_cluster import KindCluster

        return KindCluster.connect(state_dir)
    if which != "local":
        raise ClusterUnavailable(f"E2E_CLUSTER={which!r}: expected 'local' or 'kind'")
    return LocalCluster(state_dir)


def run(argv: Sequence[str], what: str, input: str | None = None) -> str:
    """Run a command; a failure raises RuntimeError naming `what` with the command's stderr."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout
