"""`kubectl cricalgo list` and `kubectl cricalgo status --watch` against the real API server."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from cricalgo_operator import plugin
from cricalgo_operator.kubeapi import KubeApi

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("cad_crd")]

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)


def cr(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": name},
        "spec": {
            "image": f"registry.local/{name}:2.0.0",
            "database": {"secretRef": {"name": "db"}},
            "redis": {"secretRef": {"name": "redis"}},
        },
    }


def set_status(kube: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    kube.kubectl(
        "patch", "cad", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


CANARY_AT_25 = {
    "phase": "Progressing",
    "stableImage": "registry.local/pay:1.0.0",
    "canaryImage": "registry.local/pay:2.0.0",
    "canaryWeight": 25,
    "currentStep": 1,
}


def test_render_list_is_one_readable_line_per_cr() -> None:
    bodies = [
        {
            "metadata": {
                "name": "pay",
                "creationTimestamp": rfc3339(NOW - datetime.timedelta(hours=3)),
            },
            "spec": cr("pay")["spec"],
            "status": {
                **CANARY_AT_25,
                "lastAnalysis": {
                    "time": rfc3339(NOW - datetime.timedelta(seconds=42)),
                    "verdict": "pass",
                },
            },
        },
        {
            "metadata": {
                "name": "fees",
                "creationTimestamp": rfc3339(NOW - datetime.timedelta(days=2)),
            },
            "spec": cr("fees")["spec"],
            "status": {"phase": "Ready", "stableImage": "registry.local/fees:2.0.0"},
        },
    ]
    lines = plugin.render_list(bodies, NOW).splitlines()
    assert lines[0].split() == [
        "NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "LAST", "VERDICT", "AGE"
    ]  # fmt: skip
    assert lines[1].split() == [
        "fees",
        "Ready",
        "registry.local/fees:2.0.0",
        "-",
        "0%",
        "-",
        "-",
        "2d",
    ]
    assert lines[2].split() == [
        "pay", "Progressing", "registry.local/pay:1.0.0", "registry.local/pay:2.0.0", "25%",
        "2/4", "pass", "42s", "ago", "3h",
    ]  # fmt: skip


def test_list_shows_every_cr_of_the_namespace(
    kube_cluster: Any, namespace: str, capsys: Any
) -> None:
    for name in ("pay", "fees"):
        kube_cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(cr(name)))
    analysed = rfc3339(datetime.datetime.now(datetime.UTC))
    set_status(
        kube_cluster,
        namespace,
        "pay",
        {**CANARY_AT_25, "lastAnalysis": {"time": analysed, "verdict": "fail", "metrics": []}},
    )
    args = ["list", "-n", namespace, "--kubeconfig", str(kube_cluster.kubeconfig)]
    assert plugin.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["NAME", "fees", "pay"]
    assert re.search(r"Progressing .* 25% +2/4 +fail \d+s ago", lines[2]), lines[2]
    # An empty namespace says so rather than printing a bare header.
    kube_cluster.kubectl("delete", "cad", "--all", "-n", namespace)
    assert plugin.main(args) == 0
    assert capsys.readouterr().out.strip() == f"no cricalgodeployments in namespace {namespace}"


async def _until(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_status_watch_prints_each_change_until_the_cr_is_deleted(
    kube_cluster: Any, namespace: str
) -> None:
    kube_cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(cr("pay")))
    set_status(kube_cluster, namespace, "pay", CANARY_AT_25)
    api = KubeApi.connect(str(kube_cluster.kubeconfig))
    out = io.StringIO()
    try:
        watching = asyncio.create_task(plugin.watch_status(api, namespace, "pay", out))
        await _until("the current status", lambda: "Progressing  weight 25%" in out.getvalue())
        kubectl = kube_cluster.kubectl
        await asyncio.to_thread(
            set_status, kube_cluster, namespace, "pay", {"phase": "Paused", "canaryWeight": 25}
        )
        await _until("the paused status", lambda: "Paused  weight 25%" in out.getvalue())
        # A write that changes nothing shown prints nothing.
        await asyncio.to_thread(
            kubectl, "annotate", "cad", "pay", "-n", namespace, "note=unrelated"
        )
        await asyncio.to_thread(kubectl, "delete", "cad", "pay", "-n", namespace)
        assert await asyncio.wait_for(watching, 30) == 0
    finally:
        await api.close()
    text = out.getvalue()
    assert text.count("--- ") == 2, text
    assert text.rstrip().endswith(f"{namespace}/pay deleted")
