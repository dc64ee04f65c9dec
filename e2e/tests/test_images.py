"""The operator's and the workload's images, built here (`make images`) and run as shipped:
non-root, a read-only root filesystem with tmpfs only where the manifests declare one, and
nothing inside that the role does not run (no compiler, no pip, no harness, no other role)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import yaml
from cricalgo_localstack import images
from cricalgo_localstack.binaries import ensure_helm
from cricalgo_localstack.deposits import deposit_body, new_secret, post_deposit
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.processes import free_port
from cricalgo_localstack.pytest_plugin import KubeCluster
from cricalgo_localstack.services import PostgresServer, RedisServer
from cricalgo_operator.model import Cad
from cricalgo_operator.render import render

# Building both images cold (pip installing every dependency) on a loaded 2-core machine can
# take longer than the suite's default per-test bound; the first test pays for the fixture.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TAG = "test"
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cricalgo-operator"
EXAMPLE = REPO / "docs" / "examples" / "minimal.yaml"
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "make", "ld")


@pytest.fixture(scope="module")
def built() -> dict[str, images.BuiltImage]:
    """Both images built from the Dockerfiles (Docker's layer cache makes a rebuild quick)."""
    return {image.name.split("/")[1].split(":")[0]: image for image in images.build_images(TAG)}


def _paths(image: str) -> list[str]:
    """Every path in the image's filesystem, from `docker export` of a created container."""
    container = images.docker("create", image).strip()
    try:
        exported = subprocess.run(
            [images.DOCKER, "export", container], capture_output=True, check=True, timeout=600
        ).stdout
    finally:
        images.docker("rm", "-f", container)
    with tarfile.open(fileobj=io.BytesIO(exported)) as archive:
        return ["/" + name.removeprefix("./") for name in archive.getnames()]


@pytest.mark.parametrize("role", images.ROLES)
def test_the_image_runs_as_its_non_root_user_and_prints_its_size(
    built: dict[str, images.BuiltImage], role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = built[role]
    with capsys.disabled():
        print(f"\n{image.name}: {image.size_bytes / 1e6:.0f} MB (built in {image.seconds:.0f} s)")
    assert images.docker("image", "inspect", "--format", "{{.Config.User}}", image.name).strip()
    uid = images.docker("run", "--rm", "--entrypoint", "id", image.name, "-u").strip()
    assert uid != "0"
    assert uid == "10001"


@pytest.mark.parametrize("role", images.ROLES)
def test_the_image_carries_only_its_role(built: dict[str, images.BuiltImage], role: str) -> None:
    paths = _paths(built[role].name)
    other = "cricalgo_workload" if role == "operator" else "cricalgo_operator"
    site = [p for p in paths if "/site-packages/" in p]
    assert any(f"/site-packages/cricalgo_{role}/" in p for p in site)
    assert [p for p in site if f"/{other}/" in p] == []
    assert [p for p in paths if "cricalgo_localstack" in p or "/e2e/" in p] == []
    assert [p for p in site if "/site-packages/cricalgo_" in p and "/tests/" in p] == []
    binaries = {p.rsplit("/", 1)[1] for p in paths if "/bin/" in p}
    assert binaries.isdisjoint(COMPILERS)
    assert "pip" not in binaries
    assert [p for p in paths if "/.cache/pip" in p or p.startswith("/wheelhouse")] == []
    assert [p for p in paths if p.startswith("/src/")] == []


def _app_pod_spec() -> dict[str, Any]:
    """The app's pod spec as the operator renders it for a minimal CR."""
    cad = Cad.from_body(
        {
            "metadata": {"name": "pay", "namespace": "payments", "uid": "u", "generation": 1},
            "spec": {
                "image": f"cricalgo/workload:{TAG}",
                "database": {"secretRef": {"name": "db"}},
                "redis": {"secretRef": {"name": "redis"}},
                "traffic": {"provider": "none"},
            },
        }
    )
    (app,) = [
        m
        for m in render(cad)
        if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-app")
    ]
    spec: dict[str, Any] = app["spec"]["template"]["spec"]
    return spec


def _docker_flags_from(pod: dict[str, Any]) -> list[str]:
    """`docker run` flags that give a container what the pod spec gives it on a kubelet."""
    (container,) = pod["containers"]
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    flags = ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if "ALL" in context.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", "ALL"]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty_dirs:
            size = empty_dirs[mount["name"]].get("sizeLimit", "64Mi").replace("Mi", "m")
            flags += ["--tmpfs", f"{mount['mountPath']}:size={size},mode=1777"]
    return flags


@pytest.fixture
def workload_env(redis_server: RedisServer, postgres_server: PostgresServer) -> dict[str, str]:
    database = postgres_server.create_database(f"img_{uuid.uuid4().hex[:8]}")
    return {
        "DATABASE_URL": database,
        "REDIS_URL": redis_server.url,
        "CRICALGO_WEBHOOK_SECRET": new_secret(),
        "CRICALGO_QUEUE": f"deposits-{uuid.uuid4().hex[:6]}",
        "CRICALGO_HOST": "127.0.0.1",
    }


class Container:
    """One `docker run -d` on the host network, removed at the end."""

    def __init__(self, image: str, flags: list[str], env: dict[str, str], *args: str) -> None:
        env_flags = [f"--env={key}={value}" for key, value in env.items()]
        self.id = images.docker(
            "run", "-d", "--network", "host", *flags, *env_flags, image, *args
        ).strip()

    def running(self) -> bool:
        state = images.docker("inspect", "--format", "{{.State.Running}}", self.id)
        return state.strip() == "true"

    def logs(self) -> str:
        result = subprocess.run(
            [images.DOCKER, "logs", self.id], capture_output=True, text=True, timeout=60
        )
        return (result.stdout + result.stderr)[-3000:]

    def remove(self) -> None:
        images.docker("rm", "-f", self.id, check=False)


def test_the_workload_image_serves_and_credits_under_the_rendered_security_context(
    built: dict[str, images.BuiltImage], workload_env: dict[str, str]
) -> None:
    pod = _app_pod_spec()
    flags = _docker_flags_from(pod)
    assert "--read-only" in flags
    assert any(flag.startswith("/tmp:") for flag in flags)
    image = built["workload"].name

    migrate = subprocess.run(
        [images.DOCKER, "run", "--rm", "--network", "host", *flags]
        + [f"--env={k}={v}" for k, v in workload_env.items()]
        + [image, "migrate"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    with psycopg.connect(workload_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES ('alice')")

    port, metrics_port = free_port(), free_port()
    app = Container(image, flags, {**workload_env, "CRICALGO_PORT": str(port)}, "webhook")
    worker = Container(
        image, flags, {**workload_env, "CRICALGO_METRICS_PORT": str(metrics_port)}, "worker"
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert app.running(), app.logs()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the webhook from its image to be ready", ready, timeout=120, context=app.logs)
        with httpx.Client(base_url=url, timeout=15) as http:
            status, tx_id = post_deposit(
                http,
                workload_env["CRICALGO_WEBHOOK_SECRET"],
                deposit_body(user_id="alice", amount="12.34"),
            )
        assert status == 202

        def credited() -> bool:
            assert worker.running(), worker.logs()
            with psycopg.connect(workload_env["DATABASE_URL"]) as conn:
                row = conn.execute(
                    "SELECT amount FROM ledger_entries WHERE tx_id = %s", (tx_id,)
                ).fetchone()
            return row is not None and str(row[0]).startswith("12.34")

        wait_for(
            "the worker from its image to credit the deposit",
            credited,
            timeout=120,
            context=worker.logs,
        )
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200
    finally:
        app.remove()
        worker.remove()


def _render_chart(namespace: str, metrics_port: int, liveness_port: int) -> list[dict[str, Any]]:
    """`helm template` of the operator's chart for one watched namespace, with its CRDs."""
    proc = subprocess.run(
        [
            str(ensure_helm()),
            "template",
            "cricalgo",
            str(CHART),
            "--namespace",
            namespace,
            "--include-crds",
            "--set",
            f"watchNamespaces={{{namespace}}}",
            "--set",
            f"image.repository=cricalgo/operator,image.tag={TAG}",
            "--set",
            f"metrics.port={metrics_port},livenessPort={liveness_port}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _container_env(container: dict[str, Any], pod_ip: str, namespace: str) -> dict[str, str]:
    """The container's env as a kubelet resolves it for a pod at `pod_ip`."""
    fields = {"status.podIP": pod_ip, "metadata.namespace": namespace}
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.cluster
def test_the_operator_image_reconciles_as_the_chart_runs_it(
    built: dict[str, images.BuiltImage],
    kube_cluster: KubeCluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The chart's Deployment, run by docker: its args, env and security context, its own
    ServiceAccount's token mounted where a kubelet mounts it, never the admin kubeconfig."""
    metrics_port, liveness_port = free_port(), free_port()
    manifests = _render_chart(namespace, metrics_port, liveness_port)
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    others = [m for m in manifests if m["kind"] != "Deployment"]
    kube_cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(others)
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == built["operator"].name
    account = pod["serviceAccountName"]
    token = kube_cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text(token)
    (secrets / "namespace").write_text(namespace)
    assert kube_cluster.ca_file is not None
    (secrets / "ca.crt").write_bytes(kube_cluster.ca_file.read_bytes())
    for path in (secrets, *secrets.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)

    api = urlsplit(kube_cluster.server)
    env = {
        **_container_env(container, "127.0.0.1", namespace),
        "KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
    }
    flags = [
        *_docker_flags_from(pod),
        "-v",
        f"{secrets}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
    ]
    assert "--read-only" in flags
    assert not any(flag.startswith("--tmpfs") for flag in flags)
    operator = Container(built["operator"].name, flags, env, *container["args"])
    cr = yaml.safe_load(EXAMPLE.read_text())
    try:

        def alive() -> bool:
            assert operator.running(), operator.logs()
            try:
                url = f"http://127.0.0.1:{liveness_port}/healthz"
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the operator image's liveness endpoint", alive, 180, context=operator.logs)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "cricalgo_operator_" in metrics

        kube_cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))

        def children() -> set[str] | None:
            listed = json.loads(
                kube_cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout
            )
            names = {item["metadata"]["name"] for item in listed["items"]}
            return names if {"payments-app", "payments-worker"} <= names else None

        wait_for("the CR's child Deployments", children, 180, context=operator.logs)
    finally:
        kube_cluster.kubectl(
            "delete", "cad", cr["metadata"]["name"], "-n", namespace,
            "--ignore-not-found", "--timeout=60s", check=False,
        )  # fmt: skip
        operator.remove()
