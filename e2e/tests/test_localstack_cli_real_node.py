"""`cricalgo dev up --real-node` runs the built images on a kubelet node, and `dev down`
leaves nothing behind: no process, shim, mount, cgroup, network device or iptables chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cricalgo_localstack.images import ensure_engine
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.real_node import CGROUP_ROOT, mounts_below
from cricalgo_localstack.stack import processes_naming

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1200)]


def _cricalgo(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cricalgo_localstack.cli", "dev", "--state-dir", str(state_dir),
         *args],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def _chains() -> set[str]:
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0][1:] for line in saved.splitlines() if line.startswith(":")}


def _links() -> set[str]:
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in listed.stdout.splitlines()}


def _restricted_pod(name: str) -> dict[str, object]:
    """The workload image, restricted as the operator renders its pods, printing a line."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "hello",
                    "image": "cricalgo/workload:dev",
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "import os; print('uid', os.getuid())"],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_dev_up_real_node_runs_images_and_dev_down_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a kubelet and containerd run containers as root only")
    ensure_engine()
    chains, links = _chains(), _links()
    state_dir = tmp_path / "dev"
    try:
        up = _cricalgo(state_dir, "up", "--real-node")
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((state_dir / "stack.json").read_text())
        real = state["real_node"]
        assert state["kubernetes"]["server"].startswith(f"https://{real['node_ip']}:")
        kubectl = [
            state["kubernetes"]["kubectl"],
            f"--kubeconfig={state['kubernetes']['kubeconfig']}",
        ]
        pod = yaml.safe_dump(_restricted_pod("hello"))
        wait_for(
            "the default ServiceAccount, then the pod created",
            lambda: subprocess.run(
                [*kubectl, "apply", "-f", "-"], input=pod, capture_output=True, text=True
            ).returncode == 0,
            timeout=60,
        )  # fmt: skip

        def logs() -> str:
            proc = subprocess.run([*kubectl, "logs", "hello"], capture_output=True, text=True)
            return proc.stdout if proc.returncode == 0 else ""

        assert wait_for("the pod's output through kubectl logs", logs, 180).strip() == "uid 10001"
        assert {f"crn-{real['suffix']}", f"crb-{real['suffix']}"} <= _links()
        assert processes_naming(state_dir)
    finally:
        down = _cricalgo(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert "local-node" in down.stdout
    wait_for("every process of the stack to exit", lambda: not processes_naming(state_dir), 30)
    assert mounts_below(tmp_path) == []
    assert _links() - links == set()
    assert _chains() - chains == set()
    assert [h.name for h in CGROUP_ROOT.iterdir() if (h / "kubepods").exists()] == []
    assert not state_dir.exists()
