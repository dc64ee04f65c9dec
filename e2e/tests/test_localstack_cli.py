"""`cricalgo dev up|status|down` from a user's shell, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cricalgo_localstack.processes import pid_alive

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _cricalgo(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cricalgo_localstack.cli",
            "dev",
            "--state-dir",
            str(state_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ},
    )


def test_dev_up_serves_kubectl_and_dev_down_leaves_no_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    pids: dict[str, int] = {}
    try:
        up = _cricalgo(state_dir, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "kubeconfig" in up.stdout

        status = _cricalgo(state_dir, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        state = json.loads(status.stdout)
        assert state["api_ready"] is True
        pids = {name: int(pid) for name, pid in state["pids"].items()}
        assert {"etcd", "kube-apiserver", "redis", "postgres", "prometheus", "nginx"} <= set(pids)
        assert "local-node" in pids

        kube = state["kubernetes"]
        namespaces = subprocess.run(
            [
                kube["kubectl"],
                "--kubeconfig",
                kube["kubeconfig"],
                "get",
                "namespaces",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "namespace/kube-system" in namespaces.stdout.split()

        crds = subprocess.run(
            [kube["kubectl"], "--kubeconfig", kube["kubeconfig"], "get", "crd", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert (
            "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io"
            in crds.stdout
        )

        # The local node runs a pod as a process; `dev logs` prints its output.
        kubectl = [kube["kubectl"], "--kubeconfig", kube["kubeconfig"]]
        pod = (
            '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"}, "spec": '
            '{"terminationGracePeriodSeconds": 1, "containers": [{"name": "probe", '
            '"image": "cricalgo/probe:v1", "readinessProbe": {"tcpSocket": {"port": 8080}, '
            '"periodSeconds": 1}}]}}'
        )
        for _ in range(80):
            created = subprocess.run(
                [*kubectl, "apply", "-f", "-"], input=pod, capture_output=True, text=True
            )
            if created.returncode == 0:
                break
            time.sleep(0.25)
        assert created.returncode == 0, created.stderr
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", "pod/hello", "--timeout=60s"], check=True
        )
        container_id = subprocess.run(
            [
                *kubectl,
                "get",
                "pod",
                "hello",
                "-o",
                "jsonpath={.status.containerStatuses[0].containerID}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        pids["pod hello"] = int(container_id.rsplit("/", 1)[1])
        logs = _cricalgo(state_dir, "logs", "hello", "-n", "default")
        assert logs.returncode == 0, logs.stderr
        assert "listening on 127." in logs.stdout
        assert _cricalgo(state_dir, "logs", "nobody").returncode == 1

        again = _cricalgo(state_dir, "up")
        assert again.returncode == 0
        assert "already running" in again.stdout
    finally:
        down = _cricalgo(state_dir, "down")
    assert down.returncode == 0, down.stderr
    still_running = [name for name, pid in pids.items() if pid_alive(pid)]
    assert still_running == []
    assert not state_dir.exists()
    assert _cricalgo(state_dir, "status").returncode == 1
