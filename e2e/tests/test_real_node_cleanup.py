"""A real node stopped leaves nothing behind: no process, shim, mount, cgroup, network device
or iptables chain of its own, and no Node object."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from cricalgo_localstack.binaries import ensure_toolchain
from cricalgo_localstack.containerd import PAUSE_IMAGE, shim_pids
from cricalgo_localstack.control_plane import ControlPlane
from cricalgo_localstack.images import ensure_engine
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.real_node import CGROUP_ROOT, NodeNetwork, RealNode, mounts_below

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1200)]


def _chains() -> set[str]:
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0][1:] for line in saved.splitlines() if line.startswith(":")}


def _links() -> set[str]:
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in listed.stdout.splitlines()}


def _processes_under(path: Path) -> list[str]:
    """Command lines that name `path` (containerd, kubelet, kube-proxy, shims: all do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(cmdline)
    return found


def _pod(name: str) -> dict[str, object]:
    """A pod of the sandbox image itself (it only waits), restricted like the workload's."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65535,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "wait",
                    "image": PAUSE_IMAGE,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_a_stopped_real_node_leaves_nothing_behind(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a kubelet and containerd run containers as root only")
    ensure_engine()
    chains, links = _chains(), _links()
    network = NodeNetwork.pick()
    control_plane = ControlPlane(ensure_toolchain(), tmp_path / "cluster", node_ip=network.node_ip)
    node = RealNode(control_plane, network, tmp_path / "node", name=f"n-{uuid.uuid4().hex[:6]}")
    try:
        network.create(node.cni_conf_dir)
        control_plane.start()
        node.start()
        assert node.containerd is not None
        socket = node.containerd.socket
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(_pod("waits")))
        control_plane.kubectl("wait", "--for=condition=Ready", "pod/waits", "--timeout=180s")
        assert shim_pids(socket)
        assert mounts_below(tmp_path)
        assert {network.device, network.bridge} <= _links()
        assert "KUBE-SERVICES" in _chains()
        node.stop()
        wait_for(
            "the Node object to go",
            lambda: control_plane.kubectl("get", "node", node.name, check=False).returncode != 0,
            timeout=30,
        )
    finally:
        node.stop()
        control_plane.stop()
        network.remove()
    wait_for("every process of the node to exit", lambda: not _processes_under(tmp_path), 30)
    assert mounts_below(tmp_path) == []
    assert _links() - links == set()
    assert _chains() - chains == set()
    assert [h.name for h in CGROUP_ROOT.iterdir() if (h / "kubepods").exists()] == []
