"""The operator's and the workload's images, built here (`make images`) and run as shipped:
non-root, a read-only root filesystem with tmpfs only where the manifests declare one, and
nothing inside that the role does not run (no compiler, no pip, no harness, no other role)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from cricalgo_localstack import images
from cricalgo_localstack.deposits import deposit_body, new_secret, post_deposit
from cricalgo_localstack.polling import wait_for
from cricalgo_localstack.processes import free_port
from cricalgo_localstack.services import PostgresServer, RedisServer
from cricalgo_operator.model import Cad
from cricalgo_operator.render import render

pytestmark = pytest.mark.slow

TAG = "test"
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
        return ["/" + name.lstrip("./") for name in archive.getnames()]


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
