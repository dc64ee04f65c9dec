"""The operator's credentials against the real API server: keys stay in memory, tokens
are read again when the server stops accepting them."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cricalgo_operator.connection import load_connection
from cricalgo_operator.kubeapi import ApiError, KubeApi
from lightkube import Client
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

pytestmark = pytest.mark.cluster

# The API server refuses TokenRequests shorter than this (10 minutes), so a test cannot
# wait for a token to expire; deleting the Secret a token is bound to makes the server
# reject it at once, with the same 401 an expired token gets.
MIN_TOKEN_SECONDS = 600


@pytest.fixture
def admin(kube_cluster: Any) -> Iterator[Client]:
    client = kube_cluster.client()
    yield client
    client.close()


def _embedded_kubeconfig(admin_kubeconfig: Path, target: Path) -> Path:
    """The admin kubeconfig with its certificate and key inlined as `*-data` fields."""
    config = yaml.safe_load(admin_kubeconfig.read_text())
    user = config["users"][0]["user"]
    for field in ("client-certificate", "client-key"):
        user[f"{field}-data"] = base64.b64encode(Path(user.pop(field)).read_bytes()).decode()
    target.write_text(yaml.safe_dump(config))
    return target


async def test_an_embedded_client_key_is_never_written_to_disk(
    kube_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = _embedded_kubeconfig(kube_cluster.kubeconfig, tmp_path / "admin.kubeconfig")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    info = load_connection(str(kubeconfig))
    api = KubeApi.connect(str(kubeconfig))
    try:
        # The key authenticates (admin may list Services anywhere) ...
        assert isinstance(await api.list("v1", "Service", "default"), list)
    finally:
        await api.close()
    # ... from an in-memory file, handed to Kopf's login as a path, not as data Kopf
    # would write out itself; and no temporary file was left behind.
    assert str(info.private_key_path).startswith("/proc/self/fd/")
    assert info.private_key_data is None
    assert list(scratch.iterdir()) == []


def _bound_token(admin: Client, namespace: str, account: str, secret: str) -> str:
    admin.create(Secret(metadata=ObjectMeta(name=secret, namespace=namespace)))
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name=account, namespace=namespace),
        spec=TokenRequestSpec(
            audiences=[],
            expirationSeconds=MIN_TOKEN_SECONDS,
            boundObjectRef=BoundObjectReference(kind="Secret", apiVersion="v1", name=secret),
        ),
    )
    answer = admin.create(request, account, namespace=namespace)
    assert answer.status is not None
    return str(answer.status.token)


@pytest.fixture
def reader(admin: Client, namespace: str) -> str:
    """A ServiceAccount that may list Services in `namespace`."""
    meta = ObjectMeta(name="reader", namespace=namespace)
    admin.create(ServiceAccount(metadata=meta))
    admin.create(
        Role(
            metadata=meta,
            rules=[PolicyRule(apiGroups=[""], resources=["services"], verbs=["list"])],
        )
    )
    admin.create(
        RoleBinding(
            metadata=meta,
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="reader"),
            subjects=[Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        )
    )
    return "reader"


def _in_cluster(
    kube_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> tuple[str | None, Path, Path]:
    """A pod's ServiceAccount mount, pointed at the test API server."""
    account_dir = tmp_path / "serviceaccount"
    account_dir.mkdir()
    (account_dir / "ca.crt").write_bytes(Path(kube_cluster.ca_file).read_bytes())
    (account_dir / "namespace").write_text(namespace)
    host, port = kube_cluster.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setattr("cricalgo_operator.connection.SA_DIR", account_dir)
    return None, account_dir / "token", account_dir


def _token_file_kubeconfig(kube_cluster: Any, tmp_path: Path) -> tuple[str | None, Path, Path]:
    """A kubeconfig whose user reads its token from a file (`tokenFile`)."""
    token = tmp_path / "token"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": kube_cluster.server,
                    "certificate-authority": str(kube_cluster.ca_file),
                },
            }
        ],
        "users": [{"name": "u", "user": {"tokenFile": str(token)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "token.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path), token, tmp_path


async def _refused(api: KubeApi, namespace: str) -> int:
    """The status of the first refused request (the server's Secret cache may lag)."""
    for _ in range(100):
        try:
            await api.list("v1", "Service", namespace)
        except ApiError as error:
            return error.status
        await asyncio.sleep(0.1)
    raise AssertionError("the API server kept accepting a token bound to a deleted Secret")


@pytest.mark.parametrize("source", ["in-cluster", "kubeconfig-tokenFile"])
async def test_a_replaced_token_is_read_again_after_the_old_one_is_refused(
    source: str,
    kube_cluster: Any,
    admin: Client,
    namespace: str,
    reader: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if source == "in-cluster":
        kubeconfig, token_path, _ = _in_cluster(kube_cluster, tmp_path, monkeypatch, namespace)
    else:
        kubeconfig, token_path, _ = _token_file_kubeconfig(kube_cluster, tmp_path)
    first = _bound_token(admin, namespace, reader, "first")
    second = _bound_token(admin, namespace, reader, "second")
    token_path.write_text(first)

    api = KubeApi.connect(kubeconfig)
    try:
        assert await api.list("v1", "Service", namespace) == []
        # The first token dies (as at its expiry) and the kubelet writes a new one.
        admin.delete(Secret, "first", namespace=namespace)
        assert await _refused(api, namespace) == 401
        token_path.write_text(second)
        assert await api.list("v1", "Service", namespace) == []
    finally:
        await api.close()
    # Kopf's login handler, run again after its own 401, reads the new token too.
    assert load_connection(kubeconfig).token == second
