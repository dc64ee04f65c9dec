"""Prometheus finds the local node's pods through the API server (`kubernetes_sd_configs`,
role pod), as on a real cluster, and labels their series from the pod labels."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cricalgo_localstack.node import LocalNode
from cricalgo_localstack.pytest_plugin import KubeCluster
from cricalgo_localstack.services import PrometheusServer, new_work_dir

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def discovering_prometheus(kube_cluster: KubeCluster) -> Iterator[PrometheusServer]:
    """A Prometheus configured like the stack's: pod discovery with the admin certificate."""
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    user = config["users"][0]["user"]
    server = PrometheusServer(
        new_work_dir("prometheus-sd"),
        kubernetes={
            "server": kube_cluster.server,
            "ca_file": str(kube_cluster.ca_file),
            "cert_file": user["client-certificate"],
            "key_file": user["client-key"],
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.work_dir, ignore_errors=True)


def query(prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_an_annotated_pod_on_the_local_node_is_scraped_with_its_labels(
    kube_cluster: KubeCluster,
    local_node: LocalNode,
    namespace: str,
    discovering_prometheus: PrometheusServer,
) -> None:
    labels = {"app.kubernetes.io/instance": "payments", "track": "canary", "version": "v2"}
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"prometheus.io/scrape": scrape, "prometheus.io/port": "9100"},
            },
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "probe", "image": "cricalgo/probe:v2", "args": ["--port", "9100"]}
                ],
            },
        }
        for name, scrape in (("scraped", "true"), ("ignored", "false"))
    ]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": pods})
    for _ in range(80):
        applied = kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)
        if applied.returncode == 0:
            break
        time.sleep(0.25)
    assert applied.returncode == 0, applied.stderr
    kube_cluster.kubectl(
        "wait", "--for=condition=Ready", "pod", "--all", "-n", namespace, "--timeout=60s"
    )
    pod_ip = kube_cluster.kubectl(
        "get", "pod", "scraped", "-n", namespace, "-o", "jsonpath={.status.podIP}"
    ).stdout

    promql = f'cricalgo_probe_requests_total{{namespace="{namespace}"}}'
    deadline = time.monotonic() + 60
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not result:
        result = query(discovering_prometheus, promql)
        time.sleep(0.5)
    assert len(result) == 1, f"no (or too many) series for {promql}: {result}"
    series = result[0]["metric"]
    assert series["pod"] == "scraped"
    assert series["app"] == "payments"
    assert series["track"] == "canary"
    assert series["version"] == "v2"
    assert series["instance"] == f"{pod_ip}:9100"
    up = query(discovering_prometheus, f'up{{job="kubernetes-pods",namespace="{namespace}"}}')
    assert [s["metric"]["pod"] for s in up] == ["scraped"]
