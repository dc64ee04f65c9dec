"""pytest fixtures for the local stack: real servers, started once per test session.

Loaded for every test directory through `-p cricalgo_localstack.pytest_plugin` in the
project's pytest settings. Each server starts the first time a test asks for it.

`E2E_CLUSTER=kind` points the Kubernetes fixtures at an existing kind cluster (the current
kubeconfig context) instead of starting the local control plane.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .binaries import ensure_toolchain
from .certs import ServerPKI, generate_server_pki
from .control_plane import ControlPlane
from .kubeconfig import render_kubeconfig, write_kubeconfig
from .mesh import LocalMesh
from .node import LocalNode
from .real_node import ApiAccess, NodeNetwork, RealNode, cni_conf_dir
from .services import NginxServer, PostgresServer, PrometheusServer, RedisServer, new_work_dir
from .stack import install_crds

_running: list[object] = []


def _stop_all() -> None:
    while _running:
        server = _running.pop()
        server.stop()  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Whatever a fixture left running (an interrupted session) stops with pytest."""
    _stop_all()


def _serve(server: object) -> Iterator[object]:
    server.start()  # type: ignore[attr-defined]
    _running.append(server)
    try:
        yield server
    finally:
        server.stop()  # type: ignore[attr-defined]
        if server in _running:
            _running.remove(server)
        shutil.rmtree(server.work_dir, ignore_errors=True)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port; `.restart()` loses every key."""
    yield from _serve(RedisServer(new_work_dir("redis")))  # type: ignore[misc]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster; `.create_database(name)` gives each test its own DB."""
    yield from _serve(PostgresServer(new_work_dir("postgres")))  # type: ignore[misc]


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    """A real Prometheus scraping whatever `.set_targets(job, targets)` names, every 1 s."""
    yield from _serve(PrometheusServer(new_work_dir("prometheus")))  # type: ignore[misc]


@dataclass
class SecuredPrometheus:
    """A Prometheus behind its own --web.config.file: TLS with a certificate for
    `server_name` only (not 127.0.0.1) from a CA of its own, a client certificate required,
    and one basic-auth user (bcrypt hash)."""

    server: PrometheusServer
    pki: ServerPKI
    username: str
    password: str
    server_name: str = "prometheus.monitoring.svc"


@pytest.fixture(scope="session")
def secured_prometheus_server() -> Iterator[SecuredPrometheus]:
    """A real Prometheus that answers only with TLS, a client certificate and basic auth."""
    import base64
    import secrets
    import ssl

    import bcrypt

    work_dir = new_work_dir("prometheus-secured")
    server_name = SecuredPrometheus.server_name
    pki = generate_server_pki(work_dir / "pki", [server_name])
    username, password = "cricalgo", secrets.token_urlsafe(16)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    context.check_hostname = False  # the readiness check dials 127.0.0.1; the CA still counts
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    server = PrometheusServer(
        work_dir,
        web_config={
            "tls_server_config": {
                "cert_file": str(pki.server.cert),
                "key_file": str(pki.server.key),
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": str(pki.ca.cert),
            },
            "basic_auth_users": {username: hashed},
        },
        ready_context=context,
        ready_headers={"Authorization": f"Basic {pair}"},
    )
    for _ in _serve(server):
        yield SecuredPrometheus(server, pki, username, password, server_name)


@pytest.fixture(scope="session")
def nginx_server() -> Iterator[NginxServer]:
    """A real nginx; `.apply_http_config(text)` sets its http block and reloads."""
    yield from _serve(NginxServer(new_work_dir("nginx")))  # type: ignore[misc]


@dataclass
class KubeCluster:
    """What a test needs to reach a Kubernetes API server as admin (or as someone else)."""

    kubeconfig: Path
    server: str
    ca_file: Path | None
    kubectl_path: str
    scratch: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def client(self) -> Any:
        """A lightkube `Client` (the tests' one client style) authenticated as admin."""
        from lightkube import Client
        from lightkube.config.kubeconfig import KubeConfig

        return Client(KubeConfig.from_file(str(self.kubeconfig)), field_manager="cricalgo-tests")

    def kubeconfig_for_token(self, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        if self.ca_file is None:
            raise RuntimeError("token kubeconfigs need the cluster CA")
        path = self.scratch / f"token-{uuid.uuid4().hex[:8]}.kubeconfig"
        return write_kubeconfig(
            path, render_kubeconfig(self.server, self.ca_file, token=token, user="token")
        )


def _kind_cluster(scratch: Path) -> KubeCluster:
    kubectl = shutil.which("kubectl")
    if shutil.which("kind") is None or kubectl is None:
        pytest.skip("E2E_CLUSTER=kind, but kind or kubectl is not installed here")
    kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
    proc = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "get", "--raw=/readyz"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"E2E_CLUSTER=kind, but no cluster answers: {proc.stderr.strip()}")
    config = yaml.safe_load(kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == current["context"]["cluster"])
    ca_path = None
    if "certificate-authority-data" in cluster["cluster"]:
        import base64

        ca_path = scratch / "kind-ca.crt"
        ca_path.write_bytes(base64.b64decode(cluster["cluster"]["certificate-authority-data"]))
    return KubeCluster(kubeconfig, cluster["cluster"]["server"], ca_path, kubectl, scratch)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The real Kubernetes control plane (local processes), with the Istio CRDs installed.

    The project's own CRDs are left to the tests that exercise them.
    """
    scratch = tmp_path_factory.mktemp("kube")
    if os.environ.get("E2E_CLUSTER") == "kind":
        cluster = _kind_cluster(scratch)
        from .istio_crds import istio_crds_path

        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(istio_crds_path()))
        yield cluster
        return
    control_plane = ControlPlane(ensure_toolchain(), scratch / "cluster")
    control_plane.start()
    _running.append(control_plane)
    try:
        from .istio_crds import istio_crds_path

        install_crds(control_plane, [istio_crds_path()])
        yield KubeCluster(
            kubeconfig=control_plane.kubeconfig,
            server=control_plane.server,
            ca_file=control_plane.ca_file,
            kubectl_path=str(control_plane.toolchain.kubectl),
            scratch=scratch,
        )
    finally:
        control_plane.stop()
        if control_plane in _running:
            _running.remove(control_plane)


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def local_node(kube_cluster: KubeCluster) -> Iterator[LocalNode]:
    """A local node of `kube_cluster`: pods the scheduler binds run as local processes,
    each on its own 127.x.y.z pod IP. Pod logs: `local_node.logs_dir / NS / POD /`."""
    if os.environ.get("E2E_CLUSTER") == "kind":
        pytest.skip("the local node runs pods on the local control plane; kind has its own nodes")
    node = LocalNode(kube_cluster.kubeconfig, kube_cluster.scratch / "node", name="local-node")
    node.start()
    _running.append(node)
    try:
        yield node
    finally:
        node.stop()
        if node in _running:
            _running.remove(node)


@pytest.fixture(scope="session")
def local_mesh(kube_cluster: KubeCluster, local_node: LocalNode) -> Iterator[LocalMesh]:
    """The local mesh on its own nginx: VirtualServices (with DestinationRule subsets) and
    canary Ingresses of `kube_cluster` route `local_mesh.url` by Host header to ready pods."""
    nginx = NginxServer(new_work_dir("mesh"))
    nginx.start()
    _running.append(nginx)
    mesh = LocalMesh(
        kube_cluster.kubeconfig,
        nginx.apply_http_config,
        listen=f"127.0.0.1:{nginx.port}",
        access_log=nginx.work_dir / "mesh-access.log",
    )
    mesh.start()
    _running.append(mesh)
    try:
        yield mesh
    finally:
        mesh.stop()
        nginx.stop()
        for server in (mesh, nginx):
            if server in _running:
                _running.remove(server)
        shutil.rmtree(nginx.work_dir, ignore_errors=True)


@dataclass
class RealNodeCluster:
    """A control plane with a real kubelet node, and the host services its pods reach on
    the node's address."""

    cluster: KubeCluster
    node: RealNode
    redis: RedisServer
    postgres: PostgresServer


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodeCluster]:
    """Its own control plane (listening on the node's address) with a real node: kubelet,
    kube-proxy, containerd, the CNI bridge, and the Istio CRDs. The operator's and the
    workload's images (tag `test`, built by `make images`' code) and `cricalgo/probe:v1` are
    loaded into containerd. Needs root.

    Module-scoped: one real node runs on a machine at a time (see RealNode.stop)."""
    if os.environ.get("E2E_CLUSTER") == "kind":
        pytest.skip("the real node joins the local control plane; kind has its own nodes")
    if os.geteuid() != 0:
        pytest.skip("a kubelet and containerd run containers as root only")
    from .images import build_images, build_probe_image
    from .istio_crds import istio_crds_path

    built = [image.name for image in build_images("test")] + [build_probe_image()]
    scratch = tmp_path_factory.mktemp("real-node")
    network = NodeNetwork.pick()
    control_plane = ControlPlane(ensure_toolchain(), scratch / "cluster", node_ip=network.node_ip)
    redis = RedisServer(new_work_dir("real-redis"), host=network.node_ip)
    postgres = PostgresServer(
        new_work_dir("real-postgres"), host=network.node_ip, trusted_cidr=network.pod_cidr
    )
    started: list[object] = []
    try:
        # The network first: it creates the address the control plane and the services bind.
        network.create(cni_conf_dir(scratch / "node"))
        control_plane.start()
        started.append(control_plane)
        install_crds(control_plane, [istio_crds_path()])
        node = RealNode(ApiAccess.of(control_plane), network, scratch / "node")
        node.start(images=tuple(built))
        started.append(node)
        for service in (redis, postgres):
            service.start()
            started.append(service)
        _running.extend(started)
        yield RealNodeCluster(
            KubeCluster(
                kubeconfig=control_plane.kubeconfig,
                server=control_plane.server,
                ca_file=control_plane.ca_file,
                kubectl_path=str(control_plane.toolchain.kubectl),
                scratch=scratch,
            ),
            node,
            redis,
            postgres,
        )
    finally:
        for server in reversed(started):
            server.stop()  # type: ignore[attr-defined]
            if server in _running:
                _running.remove(server)
        network.remove()
        postgres.remove_data()
        for service in (redis, postgres):
            shutil.rmtree(service.work_dir, ignore_errors=True)
