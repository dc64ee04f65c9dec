"""The operator process against the real API server, running as a ServiceAccount.

Each test starts `python -m cricalgo_operator` with a token bound to the shipped RBAC
(rbac/role.yaml for one namespace, rbac/clusterrole.yaml cluster-wide), so a verb the
operator uses but the role lacks fails the test.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.processes import free_port
from cricalgo_operator.canary.controls import consumed_patch, patch_cad, request_patch
from cricalgo_operator.canary.engine import decide
from cricalgo_operator.canary.model import (
    NO_CONTROL,
    CanaryStatus,
    Control,
    Reading,
    Readings,
    TrackState,
)
from cricalgo_operator.canary.runner import config_of, persist
from cricalgo_operator.drift import drifted
from cricalgo_operator.kubeapi import ApiError, KubeApi
from cricalgo_operator.model import Cad
from cricalgo_operator.render import render
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("cad_crd")]

RBAC = Path(__file__).resolve().parents[1] / "cricalgo_operator" / "rbac"

TRAFFIC = {
    "none": {"provider": "none"},
    "istio": {"provider": "istio", "hosts": ["pay.example.com"]},
    "nginx": {"provider": "nginx", "hosts": ["pay.example.com"], "ingressClassName": "nginx"},
}


def cr(provider: str, image: str = "registry.local/cricalgo:1.0.0") -> dict[str, Any]:
    return {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": "pay"},
        "spec": {
            "image": image,
            "database": {"secretRef": {"name": "pay-db"}},
            "redis": {"secretRef": {"name": "pay-redis"}},
            "traffic": TRAFFIC[provider],
        },
    }


@dataclass
class Cluster:
    """kubectl as admin in one namespace."""

    kube: Any
    namespace: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.kube.kubectl(*args, "-n", self.namespace, input=input, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", kind, name, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def apply(self, body: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(body))

    def cad(self) -> dict[str, Any]:
        body = self.get("cad", "pay")
        assert body is not None
        return body


@dataclass
class OperatorProcess:
    """`python -m cricalgo_operator` as a ServiceAccount; restartable."""

    kubeconfig: Path
    args: list[str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    metrics_port: int = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"operator-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        self.metrics_port, liveness = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cricalgo_operator",
                    # Reconciliation alone: weights here are set by the test, not analysis.
                    "--no-analysis",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--metrics-port",
                    str(self.metrics_port),
                    "--liveness",
                    f"http://127.0.0.1:{liveness}/healthz",
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

        def alive() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{liveness}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the operator's liveness endpoint", alive, timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text


def _token_kubeconfig(kube: Any, namespace: str) -> Path:
    kube.kubectl("create", "serviceaccount", "cricalgo-operator", "-n", namespace)
    token = kube.kubectl(
        "create", "token", "cricalgo-operator", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    return Path(kube.kubeconfig_for_token(token))


def _run(kubeconfig: Path, args: list[str], tmp_path: Path) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(kubeconfig, args, tmp_path)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        for i in range(1, operator.runs + 1):
            print(f"--- operator run {i} log tail ---")
            print((tmp_path / f"operator-{i}.log").read_text()[-4000:])


@pytest.fixture
def cluster(kube_cluster: Any, namespace: str) -> Cluster:
    return Cluster(kube_cluster, namespace)


@pytest.fixture
def namespaced_operator(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator for one namespace, bound to rbac/role.yaml there."""
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(RBAC / "role.yaml"))
    kube_cluster.kubectl(
        "create",
        "rolebinding",
        "cricalgo-operator",
        "-n",
        namespace,
        "--role=cricalgo-operator",
        f"--serviceaccount={namespace}:cricalgo-operator",
    )
    kubeconfig = _token_kubeconfig(kube_cluster, namespace)
    yield from _run(kubeconfig, ["--namespace", namespace], tmp_path)


@pytest.fixture
def clusterwide_operator(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator for all namespaces, bound to rbac/clusterrole.yaml."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(RBAC / "clusterrole.yaml"))
    binding = f"cricalgo-operator-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl(
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=cricalgo-operator",
        f"--serviceaccount={namespace}:cricalgo-operator",
    )
    kubeconfig = _token_kubeconfig(kube_cluster, namespace)
    try:
        yield from _run(kubeconfig, [], tmp_path)
    finally:
        kube_cluster.kubectl("delete", "clusterrolebinding", binding, check=False)


def wait_status(cluster: Cluster, what: str, check: Callable[[dict[str, Any]], bool]) -> dict:
    return wait_for(what, lambda: (lambda b: b if check(b) else None)(cluster.cad()))


def status_of(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("status") or {}


def reconciled(body: dict[str, Any]) -> bool:
    """The operator has handled the CR's first generation (children applied, status written)."""
    return status_of(body).get("observedGeneration") == 1


async def act_as(
    kubeconfig: Path, namespace: str, action: Callable[[KubeApi, Cad], Awaitable[Cad]]
) -> Cad:
    """Run `action` on the CR `pay` with the credentials of `kubeconfig`."""
    api = KubeApi.connect(str(kubeconfig))
    try:
        # The status write is conditional on the CR's resourceVersion; when the operator
        # wrote status in between, read again and retry, as any client of the API must.
        for attempt in range(5):
            body = await api.get("cricalgo.io/v1alpha1", "CricAlgoDeployment", namespace, "pay")
            assert body is not None
            try:
                return await action(api, Cad.from_body(body))
            except ApiError as error:
                if error.status != 409 or attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")
    finally:
        await api.close()


NO_READINGS = Readings()


async def decide_as(
    kubeconfig: Path,
    namespace: str,
    control: Control = NO_CONTROL,
    readings: Readings = NO_READINGS,
) -> Cad:
    """One canary decision carried out as the analysis does it (one status write, then the
    children that change), as if the canary's pods were ready and serving."""

    async def act(api: KubeApi, cad: Cad) -> Cad:
        now = datetime.datetime.now(datetime.UTC)
        tracks = TrackState(serving={"app": 0, "worker": 0})
        status = CanaryStatus.from_dict(cad.status)
        decision = decide(config_of(cad), status, readings, now, control, tracks=tracks)
        return (await persist(api, cad, decision, now))[0]

    return await act_as(kubeconfig, namespace, act)


async def set_weight_as(kubeconfig: Path, namespace: str, weight: int) -> Cad:
    """The first step (10 %), then manual steps up to `weight`."""
    cad = await decide_as(kubeconfig, namespace)
    while cad.canary_weight < weight:
        cad = await decide_as(kubeconfig, namespace, Control(promote="step"))
    assert cad.canary_weight == weight
    return cad


def children_match_render(cluster: Cluster) -> list[str]:
    """Children whose live object lacks or differs from a field of its render."""
    body = cluster.cad()
    problems = []
    for manifest in render(Cad.from_body(body)):
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        live = cluster.get(kind.lower() if kind != "HorizontalPodAutoscaler" else "hpa", name)
        if live is None:
            problems.append(f"{kind}/{name} missing")
            continue
        refs = live["metadata"].get("ownerReferences") or []
        if [r["uid"] for r in refs] != [body["metadata"]["uid"]]:
            problems.append(f"{kind}/{name} owner {refs}")
        if drifted(manifest, live):
            problems.append(f"{kind}/{name} differs from its render")
    return problems


def wait_until_children_match(cluster: Cluster) -> None:
    problems: list[str] = []

    def matched() -> bool:
        problems[:] = children_match_render(cluster)
        return not problems

    try:
        wait_for("children to match the render", matched, timeout=30)
    except AssertionError as error:
        raise AssertionError(f"{error}: {problems}") from None


@pytest.mark.parametrize("provider", ["none", "istio", "nginx"])
def test_create_applies_every_child_with_owner_references(
    cluster: Cluster, clusterwide_operator: OperatorProcess, provider: str
) -> None:
    cluster.apply(cr(provider))
    body = wait_status(cluster, "the first reconcile", reconciled)
    wait_until_children_match(cluster)
    kinds = {c.split("/")[0] for c in status_of(body)["children"]}
    expected = {
        "ServiceAccount",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    expected |= {
        "istio": {"VirtualService", "DestinationRule"},
        "nginx": {"Ingress"},
        "none": set(),
    }[provider]
    assert kinds == expected
    assert status_of(body)["stableImage"] == "registry.local/cricalgo:1.0.0"
    # No kubelet runs pods here, so Ready is False, in a shape `kubectl wait` understands,
    # and the phase says the same: never Ready while the stable pods are not.
    for condition in ("Ready=False", "Progressing=False", "Degraded=False"):
        proc = cluster.kubectl("wait", f"--for=condition={condition}", "cad/pay", "--timeout=30s")
        assert proc.returncode == 0
    assert status_of(cluster.cad())["phase"] == "Initializing"
    events = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pay,reason=Initializing",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert [e["source"]["component"] for e in events] == ["cricalgo-operator"]


@pytest.mark.parametrize("provider", ["none", "istio", "nginx"])
async def test_image_change_starts_a_canary_and_weight_25_moves_every_object(
    cluster: Cluster, namespaced_operator: OperatorProcess, provider: str
) -> None:
    cluster.apply(cr(provider))
    wait_status(cluster, "the first reconcile", reconciled)
    cluster.apply(cr(provider, image="registry.local/cricalgo:1.1.0"))
    body = wait_status(
        cluster, "phase Progressing", lambda b: status_of(b).get("phase") == "Progressing"
    )
    status = status_of(body)
    assert status["canaryImage"] == "registry.local/cricalgo:1.1.0"
    assert status["stableImage"] == "registry.local/cricalgo:1.0.0"
    assert status["canaryWeight"] == 0
    wait_for(
        "canary Deployments",
        lambda: (
            cluster.get("deployment", "pay-app-canary")
            and cluster.get("deployment", "pay-worker-canary")
        ),
    )
    stable_image = cluster.get("deployment", "pay-app")["spec"]["template"]["spec"][  # type: ignore[index]
        "containers"
    ][0]["image"]
    assert stable_image == "registry.local/cricalgo:1.0.0"
    assert (
        await asyncio.to_thread(
            cluster.kubectl, "wait", "--for=condition=Progressing=True", "cad/pay", "--timeout=30s"
        )
    ).returncode == 0

    await set_weight_as(namespaced_operator.kubeconfig, cluster.namespace, 25)

    assert status_of(cluster.cad())["canaryWeight"] == 25
    hpa = {
        n: cluster.get("hpa", n)["spec"]
        for n in ("pay-app", "pay-app-canary", "pay-worker", "pay-worker-canary")  # type: ignore[index]
    }
    assert (hpa["pay-worker-canary"]["maxReplicas"], hpa["pay-worker"]["maxReplicas"]) == (3, 7)
    if provider == "istio":
        routes = cluster.get("virtualservice", "pay")["spec"]["http"][0]["route"]  # type: ignore[index]
        assert [(r["destination"]["subset"], r["weight"]) for r in routes] == [
            ("stable", 75),
            ("canary", 25),
        ]
    elif provider == "nginx":
        ingress = cluster.get("ingress", "pay-canary")
        assert ingress is not None
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/canary"] == "true"
        assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    else:
        assert (hpa["pay-app-canary"]["maxReplicas"], hpa["pay-app"]["maxReplicas"]) == (3, 9)
    # The running operator agrees: nothing it renders differs from what is live.
    await asyncio.to_thread(wait_until_children_match, cluster)


def test_hand_edits_are_repaired_foreign_fields_survive_and_deletion_collects(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    cluster.apply(cr("istio"))
    wait_status(cluster, "the first reconcile", reconciled)
    app_uid = cluster.get("deployment", "pay-app")["metadata"]["uid"]  # type: ignore[index]
    cluster.kubectl("delete", "deployment", "pay-app", "--wait=false")
    cluster.kubectl("delete", "service", "pay-stable", "--wait=false")
    cluster.kubectl(
        "patch", "hpa", "pay-worker", "--type=merge", "-p", '{"spec":{"maxReplicas":50}}'
    )
    cluster.kubectl(
        "patch",
        "virtualservice",
        "pay",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/http/0/route/0/weight","value":50},'
        '{"op":"replace","path":"/spec/http/0/route/1/weight","value":50}]',
    )
    wait_for(
        "pay-app to come back",
        lambda: (
            (cluster.get("deployment", "pay-app") or {}).get("metadata", {}).get("uid")
            not in (None, app_uid)
        ),
    )
    wait_for("pay-stable to come back", lambda: cluster.get("service", "pay-stable"))
    wait_for(
        "the HPA max back at 10",
        lambda: (cluster.get("hpa", "pay-worker") or {}).get("spec", {}).get("maxReplicas") == 10,
    )
    wait_for(
        "the route weights back at 100/0",
        lambda: (
            [
                r["weight"]
                for r in cluster.get("virtualservice", "pay")["spec"]["http"][0]["route"]  # type: ignore[index]
            ]
            == [100, 0]
        ),
    )

    # A field another manager owns survives our next apply.
    cluster.kubectl("label", "deployment", "pay-worker", "team=payments")
    spec = cr("istio")
    spec["spec"]["worker"] = {"replicas": {"min": 2, "max": 11}}
    cluster.apply(spec)
    wait_for(
        "the HPA max at 11",
        lambda: (cluster.get("hpa", "pay-worker") or {}).get("spec", {}).get("maxReplicas") == 11,
    )
    worker = cluster.get("deployment", "pay-worker")
    assert worker is not None
    assert worker["metadata"]["labels"]["team"] == "payments"

    cluster.kubectl("delete", "cad", "pay", "--wait=true")

    def all_gone() -> bool:
        left = cluster.kubectl(
            "get",
            "deployment,service,hpa,pdb,serviceaccount,virtualservice,destinationrule",
            "-l",
            "app.kubernetes.io/instance=pay",
            "-o",
            "name",
        ).stdout.split()
        return not left

    wait_for("the garbage collector to delete every child", all_gone, timeout=90)


async def test_restart_mid_canary_keeps_status_and_weight(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    cluster.apply(cr("istio"))
    wait_status(cluster, "the first reconcile", reconciled)
    cluster.apply(cr("istio", image="registry.local/cricalgo:1.1.0"))
    wait_status(cluster, "phase Progressing", lambda b: status_of(b).get("phase") == "Progressing")
    await set_weight_as(namespaced_operator.kubeconfig, cluster.namespace, 25)
    before = status_of(cluster.cad())
    canary_uid = cluster.get("deployment", "pay-app-canary")["metadata"]["uid"]  # type: ignore[index]

    namespaced_operator.stop()
    namespaced_operator.start()
    await asyncio.to_thread(
        wait_for,
        # "Resuming", or "Updating" when the first run was stopped mid-handler.
        "the restarted operator to reconcile the CR",
        lambda: any(
            f"Handler '{handler}' succeeded" in namespaced_operator.log.read_text()
            for handler in ("resume_cad", "reconcile_cad")
        ),
    )

    after = status_of(cluster.cad())
    for key in (
        "phase",
        "canaryWeight",
        "canaryImage",
        "stableImage",
        "canaryRevision",
        "stableRevision",
        "currentStep",
        "stepStartedAt",
        "children",
    ):
        assert after.get(key) == before.get(key), key
    routes = cluster.get("virtualservice", "pay")["spec"]["http"][0]["route"]  # type: ignore[index]
    assert [r["weight"] for r in routes] == [75, 25]
    assert cluster.get("deployment", "pay-app-canary")["metadata"]["uid"] == canary_uid  # type: ignore[index]
    metrics = namespaced_operator.metrics()
    assert (
        f'cricalgo_operator_canary_weight{{name="pay",namespace="{cluster.namespace}"}} 25.0'
        in metrics
    )


async def test_merge_patch_of_the_cr_is_counted_like_every_write(
    cluster: Cluster, kube_cluster: Any
) -> None:
    cluster.apply(cr("none"))
    api = KubeApi.connect(str(kube_cluster.kubeconfig))
    try:
        body = await patch_cad(api, cluster.namespace, "pay", request_patch("abort", "now"))
        assert body["metadata"]["annotations"]["cricalgo.io/abort"] == "now"
        body = await patch_cad(api, cluster.namespace, "pay", consumed_patch(frozenset({"abort"})))
        assert "cricalgo.io/abort" not in (body["metadata"].get("annotations") or {})
        assert api.writes == 2
        with pytest.raises(ApiError) as missing:
            await patch_cad(api, cluster.namespace, "nobody", request_patch("abort", "now"))
        assert missing.value.status == 404
    finally:
        await api.close()
    assert (cluster.cad()["metadata"].get("annotations") or {}).get("cricalgo.io/abort") is None


def _outcomes(text: str, namespace: str, outcome: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cricalgo_operator_rollouts_total" and sample.labels == {
                "namespace": namespace,
                "name": "pay",
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


async def test_every_end_of_a_canary_is_counted_by_outcome(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    cluster.apply(cr("none"))
    wait_status(cluster, "the first reconcile", reconciled)
    for image in ("registry.local/cricalgo:1.1.0", "registry.local/cricalgo:1.2.0"):
        cluster.apply(cr("none", image=image))
        wait_status(cluster, image, lambda b, i=image: status_of(b).get("canaryImage") == i)
    # The reconciler (the operator process) superseded 1.1.0 with 1.2.0.
    assert _outcomes(namespaced_operator.metrics(), cluster.namespace, "superseded") == 1
    # A rollback decided and written by another process (this one) counts too.
    counted = generate_latest().decode()
    # Judged per tick on the error ratio (the sequential test needs the step's counts).
    patch = json.dumps({"spec": {"canary": {"decision": "count"}}})
    cluster.kubectl("patch", "cad", "pay", "--type=merge", "-p", patch)
    await decide_as(namespaced_operator.kubeconfig, cluster.namespace)
    terrible = Readings(
        [Reading("requests", "canary", 1000.0), Reading("errorRate", "canary", 1.0)]
    )
    cad = await decide_as(namespaced_operator.kubeconfig, cluster.namespace, readings=terrible)
    # The operator's own tick may finish the rollback (no canary pod runs here) before
    # this process's last write (the pruned children list), which then retries from there.
    assert cad.status["phase"] in ("RollingBack", "RolledBack")
    after = generate_latest().decode()
    # No canary pod runs here: the next decision finishes the rollback, adding no outcome.
    cad = await decide_as(namespaced_operator.kubeconfig, cluster.namespace)
    assert cad.status["phase"] == "RolledBack"
    assert [h["outcome"] for h in cad.status["history"]][-1] == "rolledBack"
    assert _outcomes(generate_latest().decode(), cluster.namespace, "rolledBack") == _outcomes(
        after, cluster.namespace, "rolledBack"
    )
    assert (
        _outcomes(after, cluster.namespace, "rolledBack")
        == _outcomes(counted, cluster.namespace, "rolledBack") + 1
    )


def _api_writes(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cricalgo_operator_api_writes_total"
    )


async def test_a_restart_reapplies_no_child_of_a_settled_cr_but_restores_a_deleted_one(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    other = cr("istio")
    other["metadata"]["name"] = "pay2"
    other["spec"]["traffic"] = {"provider": "istio", "hosts": ["pay2.example.com"]}
    cluster.apply(cr("istio"))
    cluster.apply(other)

    def settled(name: str) -> dict[str, Any] | None:
        body = cluster.get("cricalgodeployment", name)
        status = status_of(body or {})
        reconciled = status.get("observedGeneration") == (body or {}).get("metadata", {}).get(
            "generation"
        )
        return body if body and status.get("children") and reconciled else None

    for name in ("pay", "pay2"):
        wait_for(f"{name} reconciled", lambda name=name: settled(name))

    def restart() -> None:
        namespaced_operator.stop()
        namespaced_operator.start()
        wait_for(
            "both CRs resumed",
            lambda: (
                namespaced_operator.log.read_text().count("Handler 'resume_cad' succeeded") >= 2
            ),
        )

    # Nothing changed while the operator was away: resuming re-applies no child (before,
    # every CR's children were applied again: 2 x 12 writes here). The canary analysis is
    # left out: its ticks are not part of resuming. What writes remain come from the
    # readiness watcher's view of the Deployments, not from resuming.
    namespaced_operator.args.append("--no-analysis")
    await asyncio.to_thread(restart)
    children = len(render(Cad.from_body(cluster.cad())))
    assert _api_writes(namespaced_operator.metrics()) < children

    # A child deleted while it was away comes back.
    namespaced_operator.stop()
    cluster.kubectl("delete", "service", "pay2-canary")
    namespaced_operator.start()
    await asyncio.to_thread(
        wait_for, "pay2-canary restored", lambda: cluster.get("service", "pay2-canary")
    )
