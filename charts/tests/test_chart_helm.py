"""The operator chart: its copies match their sources, it lints, it renders what each
value set promises, its schema refuses unknown values, and a real API server accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cricalgo_localstack.binaries import ensure_helm
from cricalgo_localstack.pytest_plugin import KubeCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cricalgo-operator"

# (copy in the chart, its source in the repository); `make chart-sync` refreshes them.
COPIES = [
    *[(CHART / "crds" / crd.name, crd) for crd in sorted((REPO / "crds").glob("*.yaml"))],
    (
        CHART / "files" / "clusterrole.yaml",
        REPO / "operator" / "cricalgo_operator" / "rbac" / "clusterrole.yaml",
    ),
    (CHART / "files" / "cricalgo-alerts.yaml", REPO / "alerts" / "cricalgo-alerts.yaml"),
]


@pytest.fixture(scope="module")
def helm() -> str:
    return str(ensure_helm())


def _helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def _render(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "cricalgo", str(CHART), "--namespace", "cricalgo-system"]
    for value in sets:
        args += ["--set", value]
    return [doc for doc in yaml.safe_load_all(_helm(helm, *args).stdout) if doc]


def _kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == "Deployment")


@pytest.mark.parametrize(("copy", "source"), COPIES, ids=lambda p: p.name)
def test_chart_copies_match_their_sources(copy: Path, source: Path) -> None:
    assert copy.exists(), f"{copy} is missing: run `make chart-sync`"
    assert copy.read_text() == source.read_text(), f"{copy} is stale: run `make chart-sync`"


def test_chart_lints_strictly(helm: str) -> None:
    result = _helm(helm, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_default_values_watch_the_cluster_with_the_operators_own_rules(helm: str) -> None:
    docs = _render(helm)
    assert _kinds(docs) == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    source = yaml.safe_load((REPO / "operator/cricalgo_operator/rbac/clusterrole.yaml").read_text())
    assert role["rules"] == source["rules"]
    args = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(arg.startswith("--namespace") for arg in args)


def test_namespaced_mode_grants_roles_only_where_it_watches(helm: str) -> None:
    docs = _render(helm, "watchNamespaces={payments,staging}")
    assert "ClusterRole" not in _kinds(docs)
    roles = {doc["metadata"]["namespace"] for doc in docs if doc["kind"] == "Role"}
    bindings = {doc["metadata"]["namespace"] for doc in docs if doc["kind"] == "RoleBinding"}
    assert roles == bindings == {"payments", "staging"}
    args = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=payments" in args
    assert "--namespace=staging" in args
    peerings = {doc["metadata"]["namespace"] for doc in docs if doc["kind"] == "KopfPeering"}
    assert peerings == {"payments", "staging"}


def test_replicas_peer_through_the_shipped_peering_object(helm: str) -> None:
    """Two replicas by default, meeting in a peering object the chart creates, with the
    peering CRDs in crds/ and the rules to use them; one replica needs none of it."""
    docs = _render(helm)
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    peering = next(doc for doc in docs if doc["kind"] == "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in args
    assert "--peering-lifetime=60" in args
    role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}  # fmt: skip
    assert {"get", "list", "watch", "patch"} <= rules[("kopf.dev", "clusterkopfpeerings")]
    assert {"get", "list", "watch", "patch"} <= rules[("kopf.dev", "kopfpeerings")]
    assert "update" in rules[("cricalgo.io", "cricalgodeployments/finalizers")]
    crds = {d["metadata"]["name"] for p in (CHART / "crds").glob("*.yaml")
            for d in yaml.safe_load_all(p.read_text()) if d}  # fmt: skip
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds

    single = _render(helm, "replicaCount=1")
    assert not [doc for doc in single if "KopfPeering" in doc["kind"]]
    single_args = _deployment(single)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(arg.startswith("--peering") for arg in single_args)


def test_monitoring_objects_carry_every_alert_rule(helm: str) -> None:
    docs = _render(helm, "metrics.serviceMonitor.enabled=true", "prometheusRule.enabled=true")
    assert {"ServiceMonitor", "PrometheusRule"} <= set(_kinds(docs))
    monitor = next(doc for doc in docs if doc["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    rule = next(doc for doc in docs if doc["kind"] == "PrometheusRule")
    source = yaml.safe_load((REPO / "alerts" / "cricalgo-alerts.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_operator_pod_is_hardened(helm: str) -> None:
    pod = _deployment(_render(helm))["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]


def test_operator_listens_on_its_pod_ip(helm: str) -> None:
    container = _deployment(_render(helm))["spec"]["template"]["spec"]["containers"][0]
    env = {var["name"]: var for var in container["env"]}
    assert env["CRICALGO_BIND_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "--liveness=http://:8081/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"]["port"] == "healthz"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}


def test_analysis_settings_reach_the_operator(helm: str) -> None:
    def args(*sets: str) -> list[str]:
        docs = _render(helm, *sets)
        return list(_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"])

    default = args()
    assert not any(arg.startswith("--prometheus-url") for arg in default)
    assert "--no-analysis" not in default
    url = "http://prometheus-operated.monitoring.svc:9090"
    assert f"--prometheus-url={url}" in args(f"prometheusUrl={url}")
    assert "--no-analysis" in args("analysis=false")
    assert "--min-analysis-interval=10s" in default
    assert "--no-cr-prometheus-url" not in default
    assert "--no-cr-prometheus-url" in args("allowCrPrometheusUrl=false")
    allowed = args(f"prometheusAllowedUrls={{{url},http://thanos:9090/tenant}}")
    assert f"--prometheus-allowed-url={url}" in allowed
    assert "--prometheus-allowed-url=http://thanos:9090/tenant" in allowed


def test_prometheus_credentials_are_mounted_from_their_secret(helm: str) -> None:
    assert "volumes" not in _deployment(_render(helm))["spec"]["template"]["spec"]
    pod = _deployment(
        _render(
            helm,
            "prometheusUrl=https://thanos.monitoring:9091",
            "prometheusCredentials.secretName=thanos-client",
            "prometheusCredentials.caKey=ca.crt",
            "prometheusCredentials.certKey=tls.crt",
            "prometheusCredentials.keyKey=tls.key",
            "prometheusCredentials.username=cricalgo",
            "prometheusCredentials.passwordKey=password",
            "prometheusCredentials.serverName=thanos.monitoring.svc",
        )
    )["spec"]["template"]["spec"]
    container = pod["containers"][0]
    files = "/etc/cricalgo/prometheus"
    assert {
        f"--prometheus-ca-file={files}/ca.crt",
        f"--prometheus-cert-file={files}/tls.crt",
        f"--prometheus-key-file={files}/tls.key",
        "--prometheus-username=cricalgo",
        f"--prometheus-password-file={files}/password",
        "--prometheus-server-name=thanos.monitoring.svc",
    } <= set(container["args"])
    assert container["volumeMounts"] == [
        {"name": "prometheus-credentials", "mountPath": files, "readOnly": True}
    ]
    assert pod["volumes"] == [
        {"name": "prometheus-credentials", "secret": {"secretName": "thanos-client"}}
    ]
    # The operator itself refuses half a pair; the chart says which value is missing.
    half = _helm(
        helm, "template", "x", str(CHART),
        "--set", "prometheusCredentials.secretName=s", "--set", "prometheusCredentials.certKey=c",
        check=False,
    )  # fmt: skip
    assert half.returncode != 0
    assert "prometheusCredentials.keyKey goes with certKey" in half.stderr


def test_schema_refuses_unknown_and_ill_typed_values(helm: str) -> None:
    unknown = _helm(helm, "template", "x", str(CHART), "--set", "replicas=2", check=False)
    assert unknown.returncode != 0
    assert "additional properties 'replicas' not allowed" in unknown.stderr
    bad_level = _helm(helm, "template", "x", str(CHART), "--set", "logLevel=LOUD", check=False)
    assert bad_level.returncode != 0
    assert "logLevel" in bad_level.stderr
    bad_url = _helm(
        helm, "template", "x", str(CHART), "--set", "prometheusUrl=prometheus:9090", check=False
    )
    assert bad_url.returncode != 0
    assert "prometheusUrl" in bad_url.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("mode", ["clusterwide", "namespaced"])
def test_helm_install_is_accepted_by_the_api_server(
    helm: str, kube_cluster: KubeCluster, namespace: str, mode: str
) -> None:
    release = f"cricalgo-{mode}"
    sets = ["--set", f"watchNamespaces={{{namespace}}}"] if mode == "namespaced" else []
    base = ["--kubeconfig", str(kube_cluster.kubeconfig), "--namespace", namespace]
    try:
        _helm(helm, "install", release, str(CHART), *base, *sets)
        manifest = _helm(helm, "get", "manifest", release, *base).stdout
        for doc in (d for d in yaml.safe_load_all(manifest) if d):
            scope = (
                []
                if doc["kind"].startswith("Cluster")
                else ["-n", doc["metadata"].get("namespace", namespace)]
            )
            found = kube_cluster.kubectl(
                "get", doc["kind"], doc["metadata"]["name"], *scope, "-o", "name"
            )
            assert found.stdout.strip(), f"{doc['kind']}/{doc['metadata']['name']} was not created"
        kube_cluster.kubectl("get", "crd", "cricalgodeployments.cricalgo.io", "-o", "name")
    finally:
        _helm(helm, "uninstall", release, *base, check=False)
