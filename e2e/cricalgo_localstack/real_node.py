"""A real node for the local control plane: the kubelet and kube-proxy built from the same
`k8s.io/kubernetes` module, containerd and runc from Debian, and the CNI bridge.

The node's address is not loopback (the API server refuses a loopback node address, and
`kubectl logs`/`exec` then fail with "no preferred addresses"): it lives on a device of its own
that the node creates and removes. Pods get addresses from a /24 on a bridge of their own; the
API server listens on the node address, which pods reach through the `kubernetes` Service
and kube-proxy's rules. Everything runs as root: containers need it.
"""

from __future__ import annotations

import contextlib
import json
import random
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .binaries import ensure_node_binaries
from .certs import KeyPair, issue_certificate
from .containerd import Containerd, ensure_pause_image
from .control_plane import ControlPlane
from .kubeconfig import render_kubeconfig, write_kubeconfig
from .processes import ManagedProcess, StartupError, free_port

CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_STATE = Path("/var/lib/cni")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise StartupError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class NodeNetwork:
    """The node's own address (a /32 on a device of its own) and its pods' /24 on a bridge;
    random per node so that a leftover of an interrupted run never collides."""

    suffix: str
    node_ip: str
    pod_cidr: str

    @classmethod
    def pick(cls) -> NodeNetwork:
        a, b = random.randint(0, 255), random.randint(1, 254)
        return cls(suffix=f"{a:02x}{b:02x}", node_ip=f"10.199.{a}.{b}", pod_cidr=f"10.200.{a}.0/24")

    @property
    def device(self) -> str:
        return f"crn-{self.suffix}"

    @property
    def bridge(self) -> str:
        return f"crb-{self.suffix}"

    def create(self, cni_conf_dir: Path) -> None:
        # A bridge without ports: the kernels here have no `dummy` module, and a bridge
        # device is what Docker and the CNI plugin need anyway.
        _run("ip", "link", "add", self.device, "type", "bridge")
        _run("ip", "addr", "add", f"{self.node_ip}/32", "dev", self.device)
        _run("ip", "link", "set", self.device, "up")
        cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (cni_conf_dir / "10-cricalgo.conflist").write_text(
            json.dumps(self.render_cni(cni_conf_dir.parent / "cni-ipam"), indent=2)
        )

    def render_cni(self, ipam_dir: Path) -> dict[str, object]:
        """The bridge (with host-local addresses) and portmap chain; containerd adds lo."""
        return {
            "cniVersion": "1.0.0",
            "name": f"cricalgo-{self.suffix}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def remove(self) -> None:
        for device in (self.bridge, self.device):
            _run("ip", "link", "del", device, check=False)


def _kubelet_config(
    network: NodeNetwork, containerd: Containerd, ca_file: Path, serving: tuple[Path, Path]
) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.node_ip,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": containerd.endpoint,
        # The machines mount cgroup v1 only and run no systemd; they have no swap limits.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "podCIDR": network.pod_cidr,
        "resolvConf": "/etc/resolv.conf",
        # A shared development machine: pods are not evicted, nor images collected, over
        # disk the other checkouts use; images reach containerd only by import.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def cni_conf_dir(node_state_dir: Path) -> Path:
    """Where a node with this state directory keeps its CNI configuration."""
    return node_state_dir / "cni" / "net.d"


@dataclass(frozen=True)
class ApiAccess:
    """What the node needs of its control plane: where it listens, its CA (which signs the
    node's certificates) and an admin kubectl. A plain record, so that a process other than
    the one that started the control plane (`cricalgo dev up`'s agent) can run the node."""

    server: str
    ca: KeyPair
    kubeconfig: Path
    kubectl_path: Path

    @classmethod
    def of(cls, control_plane: ControlPlane) -> ApiAccess:
        assert control_plane.pki is not None, "the control plane is not started"
        return cls(
            control_plane.server,
            control_plane.pki.ca,
            control_plane.kubeconfig,
            control_plane.toolchain.kubectl,
        )

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise StartupError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc


@dataclass
class RealNode:
    """A kubelet, kube-proxy and containerd registered with the API server as `name`.

    The network comes first (`network.create(cni_conf_dir(state_dir))`): the control plane
    binds its address (`ControlPlane(..., node_ip=network.node_ip)`); then
    `RealNode(ApiAccess.of(control_plane), network, ...)`.
    """

    api: ApiAccess
    network: NodeNetwork
    state_dir: Path
    name: str = "real-node"
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    containerd: Containerd | None = field(default=None, init=False)

    @property
    def cni_conf_dir(self) -> Path:
        return cni_conf_dir(self.state_dir)

    def start(self, images: tuple[str, ...] = (), timeout: float = 180) -> None:
        """Build what is missing, start containerd, load `images`, register the node and
        wait until it is Ready and kube-proxy has written the `kubernetes` Service's rules."""
        binaries = ensure_node_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.containerd = Containerd(self.state_dir / "containerd", self.cni_conf_dir)
            self.containerd.start()
            self.containerd.load_images(ensure_pause_image(), *images)
            self._start_kubelet(binaries.kubelet, timeout)
            self._start_kube_proxy(binaries.kube_proxy, timeout)
        except BaseException:
            self.stop()
            raise

    def _kubeconfig(self, stem: str, common_name: str, organization: str | None) -> Path:
        pair = issue_certificate(
            self.api.ca, self.state_dir / "pki", stem, common_name, organization
        )
        return write_kubeconfig(
            self.state_dir / f"{stem}.kubeconfig",
            render_kubeconfig(
                self.api.server,
                self.api.ca.cert,
                client_cert=pair.cert,
                client_key=pair.key,
                user=common_name,
            ),
        )

    def _start_kubelet(self, kubelet: Path, timeout: float) -> None:
        assert self.containerd is not None
        ca = self.api.ca
        kubeconfig = self._kubeconfig("kubelet", f"system:node:{self.name}", "system:nodes")
        serving = issue_certificate(
            ca, self.state_dir / "pki", "kubelet-serving", self.name, ips=(self.network.node_ip,)
        )
        config = self.state_dir / "kubelet-config.json"
        config.write_text(
            json.dumps(
                _kubelet_config(self.network, self.containerd, ca.cert, (serving.cert, serving.key))
            )
        )
        process = ManagedProcess(
            "kubelet",
            [
                str(kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.state_dir / 'kubelet'}",
                f"--cert-dir={self.state_dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.network.node_ip}",
                "--node-labels=cricalgo.io/real-node=true",
                "--v=1",
            ],
            self.state_dir / "logs" / "kubelet.log",
            stop_grace=20,
        )
        self.processes.append(process)
        process.start()
        process.wait_ready(self._node_ready, timeout)

    def _node_ready(self) -> bool:
        proc = self.api.kubectl(
            "get", "node", self.name, "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )  # fmt: skip
        return proc.returncode == 0 and proc.stdout.strip() == "True"

    def _start_kube_proxy(self, kube_proxy: Path, timeout: float) -> None:
        kubeconfig = self._kubeconfig("kube-proxy", "system:kube-proxy", None)
        config = self.state_dir / "kube-proxy-config.json"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "mode": "iptables",
                    "clusterCIDR": self.network.pod_cidr,
                    "hostnameOverride": self.name,
                    "bindAddress": self.network.node_ip,
                    "healthzBindAddress": f"127.0.0.1:{free_port()}",
                    "metricsBindAddress": f"127.0.0.1:{free_port()}",
                    "nodePortAddresses": [f"{self.network.node_ip}/32"],
                    # Leave the machine's conntrack table size alone.
                    "conntrack": {"maxPerCore": 0, "min": 0},
                }
            )
        )
        process = ManagedProcess(
            "kube-proxy",
            [str(kube_proxy), f"--config={config}", "--v=1"],
            self.state_dir / "logs" / "kube-proxy.log",
        )
        self.processes.append(process)
        process.start()
        process.wait_ready(self._service_rules_written, timeout)

    @staticmethod
    def _service_rules_written() -> bool:
        rules = _run("iptables", "-t", "nat", "-S", "KUBE-SERVICES", check=False).stdout
        return "default/kubernetes:https" in rules

    def drain(self, timeout: float = 120) -> None:
        """Delete every pod bound to the node at once and wait until the kubelet has
        stopped their containers and torn down their sandboxes' networks."""
        self.api.kubectl(
            "delete", "pods", "--all-namespaces", "--field-selector",
            f"spec.nodeName={self.name}", "--grace-period=0", "--force", "--wait=false",
            check=False,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.containerd is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                if not self.containerd.ctr("tasks", "ls", "-q", timeout=30).split():
                    return
            time.sleep(1)

    def stop(self) -> None:
        """Stop everything it started and remove what it made: containers, shims, mounts,
        cgroups, network devices, iptables rules and the Node object."""
        kubelet_running = any(p.name == "kubelet" and p.running() for p in self.processes)
        if kubelet_running and self.containerd is not None:
            self.drain()
        for process in reversed(self.processes):
            process.stop()
            if process.name == "kube-proxy":
                _run(str(process.argv[0]), "--cleanup", check=False)
        self.processes.clear()
        if self.containerd is not None:
            self.containerd.stop()
            self.containerd = None
        unmount_below(self.state_dir)
        # containerd's CNI result cache, empty once every sandbox is gone.
        for directory in (CNI_STATE / "results", CNI_STATE):
            with contextlib.suppress(OSError):
                directory.rmdir()
        remove_cgroups("kubepods")
        remove_kubelet_chains()
        self.network.remove()
        self.api.kubectl("delete", "node", self.name, "--wait=false", check=False)


def mounts_below(path: Path) -> list[str]:
    """Mount points under `path`, deepest first."""
    prefix = str(path.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_below(path: Path) -> None:
    for point in mounts_below(path):
        _run("umount", "-l", point, check=False)


def remove_cgroups(name: str) -> None:
    """The kubelet's cgroup tree in every v1 hierarchy, deepest first (empty by now)."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for directory in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


# Chains the kubelet creates in the tables it touches (kube-proxy's own go with --cleanup).
# They are the machine's, not the node's: one real node runs on a machine at a time.
KUBELET_CHAINS = {
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "filter": ("KUBE-KUBELET-CANARY", "KUBE-FIREWALL"),
}


def remove_kubelet_chains() -> None:
    """The kubelet's chains and every rule that jumps to them."""
    for table, chains in KUBELET_CHAINS.items():
        rules = _run("iptables", "-t", table, "-S", check=False).stdout.splitlines()
        for rule in rules:
            words = shlex.split(rule)
            if words[:1] == ["-A"] and any(f"-j {chain}" in rule for chain in chains):
                _run("iptables", "-t", table, "-D", *words[1:], check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-F", chain, check=False)
            _run("iptables", "-t", table, "-X", chain, check=False)
