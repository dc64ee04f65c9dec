"""The whole local stack: control plane, Redis, PostgreSQL, Prometheus, nginx, and the
local node and mesh (one supervised process running pods and routing nginx).

`cricalgo dev up` starts it detached and records it in a state file; `dev status` and
`dev down` read that file, so they work from any later shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import READY_FILE
from .binaries import Toolchain, ensure_toolchain
from .containers import kill_recorded
from .control_plane import ControlPlane
from .istio_crds import istio_crds_path
from .processes import ManagedProcess, pid_alive, terminate_group
from .real_node import (
    NodeNetwork,
    cni_conf_dir,
    remove_cgroups,
    remove_kubelet_chains,
    unmount_below,
)
from .services import (
    NginxServer,
    PostgresServer,
    PrometheusServer,
    RedisServer,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = "stack.json"
# The local node's state: its log, and each pod's container logs under pods/NS/POD/.
NODE_DIR = "node"


def default_state_dir() -> Path:
    """`$CRICALGO_STATE_DIR`, else `$XDG_STATE_HOME/cricalgo/dev`."""
    explicit = os.environ.get("CRICALGO_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "cricalgo" / "dev"


def project_crds() -> list[Path]:
    """The CRDs this repository defines (`crds/*.yaml`)."""
    return sorted((REPO_ROOT / "crds").glob("*.yaml"))


def install_crds(control_plane: ControlPlane, paths: list[Path]) -> None:
    """Server-side apply CRD files and wait until the API server serves them."""
    for path in paths:
        control_plane.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=cricalgo-dev",
            "-f",
            str(path),
        )
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


@dataclass
class LocalStack:
    """Every process of the local stack, started in dependency order."""

    state_dir: Path
    toolchain: Toolchain | None = None
    # A real node (kubelet, containerd; root only) running the `dev`-tagged images that
    # `make images` builds, instead of the local node running commands.
    real_node: bool = False
    network: NodeNetwork | None = field(default=None, init=False)
    images: list[str] = field(default_factory=list, init=False)
    control_plane: ControlPlane | None = field(default=None, init=False)
    redis: RedisServer | None = field(default=None, init=False)
    postgres: PostgresServer | None = field(default=None, init=False)
    prometheus: PrometheusServer | None = field(default=None, init=False)
    nginx: NginxServer | None = field(default=None, init=False)
    agent: ManagedProcess | None = field(default=None, init=False)

    def start(self) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        toolchain = self.toolchain or ensure_toolchain()
        host = "127.0.0.1"
        try:
            if self.real_node:
                from .images import build_images

                self.images = [image.name for image in build_images("dev")]
                _say(f"images built: {', '.join(self.images)}", started)
                self.network = NodeNetwork.pick()
                self.network.create(cni_conf_dir(self.state_dir / NODE_DIR))
                host = self.network.node_ip
            self.control_plane = ControlPlane(
                toolchain, self.state_dir / "cluster", node_ip=host if self.real_node else None
            )
            self.control_plane.start()
            _say(f"control plane ready at {self.control_plane.server}", started)
            install_crds(self.control_plane, [istio_crds_path(), *project_crds()])
            _say("Istio and CricAlgo CRDs installed", started)
            # On a real node, pods reach them on the node's address.
            self.redis = RedisServer(self.state_dir / "redis", host=host)
            self.redis.start()
            self.postgres = PostgresServer(
                self.state_dir / "postgres",
                host=host,
                trusted_cidr=self.network.pod_cidr if self.network else None,
            )
            self.postgres.start()
            pki = self.control_plane.pki
            assert pki is not None
            self.prometheus = PrometheusServer(
                self.state_dir / "prometheus",
                scrape_interval="5s",
                kubernetes={
                    "server": self.control_plane.server,
                    "ca_file": str(pki.ca.cert),
                    "cert_file": str(pki.admin.cert),
                    "key_file": str(pki.admin.key),
                },
            )
            self.prometheus.start()
            self.nginx = NginxServer(self.state_dir / "nginx")
            self.nginx.start()
            _say("Redis, PostgreSQL, Prometheus and nginx ready", started)
            self._start_agent()
            _say("local node and mesh running", started)
        except BaseException:
            self.stop()
            raise
        self.write_state()

    def _start_agent(self) -> None:
        """The local node and mesh, in a process of their own: `dev up` returns, they stay."""
        assert self.control_plane is not None
        assert self.nginx is not None
        node_dir = self.state_dir / NODE_DIR
        argv = [
            sys.executable,
            "-m",
            "cricalgo_localstack.agent",
            f"--kubeconfig={self.control_plane.kubeconfig}",
            f"--state-dir={node_dir}",
            f"--nginx-prefix={self.nginx.work_dir}",
            f"--mesh-listen=127.0.0.1:{self.nginx.port}",
        ]
        if self.network is not None:
            net = self.network
            argv += [
                "--real-node",
                "--node-name=cricalgo-real",
                f"--server={self.control_plane.server}",
                f"--pki-dir={self.control_plane.state_dir / 'pki'}",
                f"--kubectl={self.control_plane.toolchain.kubectl}",
                f"--network={net.suffix},{net.node_ip},{net.pod_cidr}",
                *(f"--image={image}" for image in self.images),
            ]
        self.agent = ManagedProcess(
            "local-node",
            argv,
            node_dir / "agent.log",
            # It stops each pod (SIGTERM, up to 5 s, SIGKILL) before it exits; a real node
            # also waits for the kubelet to tear the pods down, then removes what it made.
            stop_grace=REAL_NODE_STOP_GRACE if self.real_node else 20.0,
        )
        self.agent.start()
        # A real node loads the images into containerd first (about a minute).
        self.agent.wait_ready(lambda: (node_dir / READY_FILE).exists(), 300)

    def describe(self) -> dict[str, Any]:
        if not (self.control_plane and self.redis and self.postgres):
            raise RuntimeError("the local stack is not started")
        if not (self.prometheus and self.nginx):
            raise RuntimeError("the local stack is not started")
        pids = dict(self.control_plane.describe()["pids"])  # type: ignore[call-overload]
        signals: dict[str, int] = {}
        for name, server in (
            ("redis", self.redis),
            ("postgres", self.postgres),
            ("prometheus", self.prometheus),
            ("nginx", self.nginx),
        ):
            if server.process and server.process.pid:
                pids[name] = server.process.pid
                signals[name] = int(server.process.stop_signal)
        if self.agent is not None and self.agent.pid:
            pids["local-node"] = self.agent.pid
            signals["local-node"] = int(signal.SIGTERM)
        real: dict[str, str] = {}
        if self.network is not None:
            real = {
                "suffix": self.network.suffix,
                "node_ip": self.network.node_ip,
                "pod_cidr": self.network.pod_cidr,
            }
        return {
            "state_dir": str(self.state_dir),
            "real_node": real,
            "kubernetes": {
                "server": self.control_plane.server,
                "kubeconfig": str(self.control_plane.kubeconfig),
                "kubectl": str(self.control_plane.toolchain.kubectl),
            },
            "redis": self.redis.url,
            "postgres": self.postgres.dsn,
            "prometheus": self.prometheus.url,
            "nginx": self.nginx.url,
            "pids": pids,
            "stop_signals": signals,
            "stop_graces": {"local-node": REAL_NODE_STOP_GRACE} if real else {},
            # Directories outside state_dir that `dev down` removes too.
            "scratch_dirs": [str(d) for d in self.postgres.scratch_dirs()],
        }

    def write_state(self) -> None:
        (self.state_dir / STATE_FILE).write_text(json.dumps(self.describe(), indent=2))

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        for server in (self.nginx, self.prometheus, self.redis):
            if server is not None:
                server.stop()
        if self.postgres is not None:
            self.postgres.remove_data()
        if self.control_plane is not None:
            self.control_plane.stop()
        if self.network is not None:
            remove_real_node_leftovers(self.state_dir, self.network)
            self.network = None


REAL_NODE_STOP_GRACE = 120.0


def processes_naming(path: Path) -> list[int]:
    """Processes whose command line names `path`."""
    found = []
    needle = str(path).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def remove_real_node_leftovers(state_dir: Path, network: NodeNetwork) -> None:
    """What a real node leaves when its agent could not clean up: mounts under the state
    directory, the kubelet's cgroups and iptables chains, the node's network devices, and
    any of its processes (kubelet, kube-proxy, containerd, shims: each names the directory)."""
    for pid in processes_naming(state_dir / NODE_DIR):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    unmount_below(state_dir)
    remove_cgroups("kubepods")
    remove_kubelet_chains()
    network.remove()


def _say(message: str, started: float) -> None:
    print(f"[cricalgo dev] {message} ({time.monotonic() - started:.0f}s)", flush=True)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The recorded stack, or None if none was started here."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def live_pids(state: dict[str, Any]) -> dict[str, int]:
    """The recorded processes that are still running."""
    return {name: pid for name, pid in state["pids"].items() if pid_alive(int(pid))}


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop every process a state file records and remove the state; return their names."""
    state = read_state(state_dir)
    if state is None:
        return []
    # Reverse start order: services first, the API server's clients, then etcd last.
    order = [
        "local-node",
        "nginx",
        "prometheus",
        "postgres",
        "redis",
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
    ]
    stopped = []
    for name in sorted(state["pids"], key=lambda n: order.index(n) if n in order else -1):
        pid = int(state["pids"][name])
        if pid_alive(pid):
            sig = int(state.get("stop_signals", {}).get(name, signal.SIGTERM))
            grace = float(state.get("stop_graces", {}).get(name, 10.0))
            terminate_group(pid, grace=grace, sig=sig)
            stopped.append(name)
    real = state.get("real_node") or {}
    if real:
        # The agent removes all of it when it stops; this is for an agent that was killed.
        network = NodeNetwork(real["suffix"], real["node_ip"], real["pod_cidr"])
        remove_real_node_leftovers(state_dir, network)
    # Pods whose node died without stopping them (it records each container's pid).
    for pid_file in (state_dir / NODE_DIR / "pods").glob("*/*/*.pid"):
        kill_recorded(pid_file)
    for scratch in state.get("scratch_dirs", []):
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    return stopped


def kubectl_cmd(state: dict[str, Any]) -> list[str]:
    return [state["kubernetes"]["kubectl"], f"--kubeconfig={state['kubernetes']['kubeconfig']}"]


def api_ready(state: dict[str, Any]) -> bool:
    proc = subprocess.run(
        [*kubectl_cmd(state), "get", "--raw=/readyz"], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and proc.stdout.strip() == "ok"
