"""A real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, built from the Go module proxy.

There is no kubelet: Deployments produce ReplicaSets and Pods, and Pods stay Pending
until a node takes them (the local node, when one runs).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .binaries import Toolchain
from .certs import ClusterPKI, generate_pki
from .kubeconfig import render_kubeconfig, write_kubeconfig
from .processes import ManagedProcess, free_port

SERVICE_CIDR = "10.96.0.0/16"


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


def _https_ok(url: str, pki: ClusterPKI) -> bool:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    with urllib.request.urlopen(url, context=context, timeout=2) as response:
        return bool(response.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler."""

    toolchain: Toolchain
    state_dir: Path
    # With a real node: the node's non-loopback address. The API server then also listens
    # instead and advertises it as the `kubernetes` Service's endpoint, which pods reach
    # through kube-proxy; without one it listens on loopback.
    node_ip: str | None = None
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    api_port: int = field(default=0, init=False)
    etcd_port: int = field(default=0, init=False)
    pki: ClusterPKI | None = field(default=None, init=False)
    _etcd_data: Path | None = field(default=None, init=False)

    @property
    def server(self) -> str:
        return f"https://{self.node_ip or '127.0.0.1'}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        assert self.pki is not None, "the control plane is not started"
        return self.pki.ca.cert

    def _logs(self) -> Path:
        return self.state_dir / "logs"

    def start(self, timeout: float = 120.0) -> None:
        """Start every component and wait until the API server reports /readyz."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki = generate_pki(
            self.state_dir / "pki", extra_ips=(self.node_ip,) if self.node_ip else ()
        )
        self._etcd_data = Path(tempfile.mkdtemp(prefix="cricalgo-etcd-"))
        self.etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        try:
            self._start_etcd(peer_port, timeout)
            self._start_apiserver(pki, timeout)
            self._start_controllers(pki)
        except BaseException:
            self.stop()
            raise

    def _start_etcd(self, peer_port: int, timeout: float) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        etcd = ManagedProcess(
            "etcd",
            [
                str(self.toolchain.etcd),
                "--name=cricalgo",
                f"--data-dir={self._etcd_data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=cricalgo={peer}",
                # A throwaway test cluster: durability costs time and buys nothing here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self._logs() / "etcd.log",
        )
        self.processes.append(etcd)
        etcd.start()
        etcd.wait_ready(lambda: _http_ok(f"{client}/health"), timeout)

    def _start_apiserver(self, pki: ClusterPKI, timeout: float) -> None:
        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(self.toolchain.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                *self._listen_flags(pki),
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--authorization-mode=Node,RBAC",
                # As hardened clusters do: an owner reference with blockOwnerDeletion needs
                # `update` on the owner's finalizers, so a missing rule fails a test here.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            self._logs() / "kube-apiserver.log",
        )
        self.processes.append(apiserver)
        apiserver.start()
        apiserver.wait_ready(lambda: _https_ok(f"{self.server}/readyz", pki), timeout)
        write_kubeconfig(
            self.kubeconfig,
            render_kubeconfig(
                self.server, pki.ca.cert, client_cert=pki.admin.cert, client_key=pki.admin.key
            ),
        )

    def _listen_flags(self, pki: ClusterPKI) -> list[str]:
        if self.node_ip is None:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # Loopback addresses are not valid endpoints for the `kubernetes` Service.
                "--endpoint-reconciler-type=none",
            ]
        return [
            # Only the node's address: host clients and pods (via kube-proxy) alike use it.
            f"--bind-address={self.node_ip}",
            f"--advertise-address={self.node_ip}",
            # `kubectl logs` and `exec` go from the API server to the kubelet.
            f"--kubelet-client-certificate={pki.admin.cert}",
            f"--kubelet-client-key={pki.admin.key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _start_controllers(self, pki: ClusterPKI) -> None:
        cm_config = write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig",
            render_kubeconfig(
                self.server,
                pki.ca.cert,
                client_cert=pki.controller_manager.cert,
                client_key=pki.controller_manager.key,
                user="system:kube-controller-manager",
            ),
        )
        sched_config = write_kubeconfig(
            self.state_dir / "scheduler.kubeconfig",
            render_kubeconfig(
                self.server,
                pki.ca.cert,
                client_cert=pki.scheduler.cert,
                client_key=pki.scheduler.key,
                user="system:kube-scheduler",
            ),
        )
        controller_manager = ManagedProcess(
            "kube-controller-manager",
            [
                str(self.toolchain.kube_controller_manager),
                f"--kubeconfig={cm_config}",
                f"--authentication-kubeconfig={cm_config}",
                f"--authorization-kubeconfig={cm_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The HPA controller polls quickly so tests see scaling without waiting.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--v=1",
            ],
            self._logs() / "kube-controller-manager.log",
        )
        scheduler = ManagedProcess(
            "kube-scheduler",
            [
                str(self.toolchain.kube_scheduler),
                f"--kubeconfig={sched_config}",
                f"--authentication-kubeconfig={sched_config}",
                f"--authorization-kubeconfig={sched_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
            self._logs() / "kube-scheduler.log",
        )
        for process in (controller_manager, scheduler):
            self.processes.append(process)
            process.start()
        for process in (controller_manager, scheduler):
            process.wait_ready(lambda: True, 5)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster with the admin kubeconfig."""
        proc = subprocess.run(
            [str(self.toolchain.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def describe(self) -> dict[str, object]:
        """What `cricalgo dev status` and the state file record about this cluster."""
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "etcd": f"http://127.0.0.1:{self.etcd_port}",
            "pids": {p.name: p.pid for p in self.processes if p.pid},
        }

    def stop(self) -> None:
        """Stop the components in reverse order and remove etcd's temporary data."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._etcd_data is not None:
            shutil.rmtree(self._etcd_data, ignore_errors=True)
            self._etcd_data = None
