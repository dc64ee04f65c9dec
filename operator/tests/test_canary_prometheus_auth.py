"""A CR's Prometheus credentials, from Secrets on the real API server, against real servers.

The secured Prometheus runs with its own --web.config.file: TLS from a CA of its own with a
certificate for prometheus.monitoring.svc only, a client certificate required, and a
basic-auth user with a bcrypt hash. Bearer tokens are checked by a real nginx in front of a
plain Prometheus (Prometheus itself has no bearer-token check; a proxy is how one is
usually put in front of it). The operator reads the Secrets as its own ServiceAccount bound
to its least-privilege Role, so a missing RBAC verb fails here.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import test_canary_cluster as canary_cluster  # loaded by conftest.py
from cricalgo_operator.canary.model import CanaryConfig, CanaryStatus
from cricalgo_operator.canary.prometheus import (
    PrometheusAuthError,
    PrometheusClient,
    PrometheusUnavailable,
)
from cricalgo_operator.canary.prometheus_auth import (
    PrometheusAuth,
    PrometheusCredentials,
    PrometheusEndpoint,
    prometheus_endpoint,
)
from cricalgo_operator.canary.prometheus_policy import PrometheusFiles, PrometheusPolicy
from cricalgo_operator.canary.runner import read_readings
from cricalgo_operator.config import ConfigError, parse_config
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.model import Cad

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("cad_crd")]

BEARER_TOKEN = "s3cr3t-t0ken-for-prometheus"


def _secret(kube_cluster: Any, namespace: str, name: str, **files: Path | str) -> None:
    args = [
        f"--from-file={key}={value}" if isinstance(value, Path) else f"--from-literal={key}={value}"
        for key, value in files.items()
    ]
    kube_cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *args)


def _spec(url: str, **prometheus: Any) -> dict[str, Any]:
    prometheus["url"] = url
    return {"image": "registry.local/cricalgo:1.0.0", "canary": {"prometheus": prometheus}}


def _secured(secured: Any) -> dict[str, Any]:
    """The `spec.canary.prometheus` credentials that open the secured Prometheus."""
    return {
        "basicAuth": {
            "username": {"name": "prometheus-auth", "key": "username"},
            "password": {"name": "prometheus-auth", "key": "password"},
        },
        "tls": {
            "caSecret": {"name": "prometheus-ca", "key": "ca.crt"},
            "certSecret": {"name": "prometheus-client", "key": "tls.crt"},
            "keySecret": {"name": "prometheus-client", "key": "tls.key"},
            "serverName": secured.server_name,
        },
    }


@pytest.fixture
async def operator_api(kube_cluster: Any, namespace: str) -> AsyncIterator[KubeApi]:
    """The operator's client, as its ServiceAccount bound to its least-privilege Role."""
    api = KubeApi.connect(str(canary_cluster.operator_kubeconfig(kube_cluster, namespace)))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
def secured_secrets(kube_cluster: Any, namespace: str, secured_prometheus_server: Any) -> Any:
    secured = secured_prometheus_server
    _secret(
        kube_cluster,
        namespace,
        "prometheus-auth",
        username=secured.username,
        password=secured.password,
    )
    _secret(kube_cluster, namespace, "prometheus-ca", **{"ca.crt": secured.pki.ca.cert})
    _secret(
        kube_cluster,
        namespace,
        "prometheus-client",
        **{"tls.crt": secured.pki.client.cert, "tls.key": secured.pki.client.key},
    )
    return secured


async def _endpoint(api: KubeApi, namespace: str, spec: dict[str, Any]) -> PrometheusEndpoint:
    return await prometheus_endpoint(api, namespace, spec, PrometheusPolicy())


async def _query(endpoint: PrometheusEndpoint) -> float | None:
    assert endpoint.url is not None, endpoint.refused
    async with PrometheusClient(endpoint.url, retries=0, credentials=endpoint.credentials) as c:
        return (await c.query("vector(42)")).value


def _cad(namespace: str, spec: dict[str, Any]) -> Cad:
    return Cad.from_body(
        {"metadata": {"name": "pay", "namespace": namespace, "uid": "u"}, "spec": spec}
    )


async def test_basic_auth_tls_and_client_certificate_from_secrets(
    operator_api: KubeApi, namespace: str, secured_secrets: Any
) -> None:
    secured = secured_secrets
    spec = _spec(secured.server.url, **_secured(secured))
    endpoint = await _endpoint(operator_api, namespace, spec)
    assert endpoint.refused is None
    assert await _query(endpoint) == 42.0
    # The scrape-window check reads /api/v1/targets with the same credentials.
    async with PrometheusClient(
        secured.server.url, retries=0, credentials=endpoint.credentials
    ) as client:
        assert "activeTargets" in await client.targets()
    # The analysis itself: every query is answered (a value, or an empty series: nothing
    # scrapes this CR's pods), none fails on the credentials.
    config = CanaryConfig.from_spec(spec)
    readings = await read_readings(_cad(namespace, spec), config, CanaryStatus(), endpoint)
    assert {r.error for r in readings} <= {"", "empty"}
    assert len(list(readings)) > 3


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda p: p["basicAuth"].update(password={"name": "prometheus-wrong", "key": "wrong"}),
            PrometheusAuthError,
            "refused the credentials \\(HTTP 401\\)",
        ),
        # The certificate names prometheus.monitoring.svc, not the 127.0.0.1 dialled.
        (lambda p: p["tls"].pop("serverName"), PrometheusUnavailable, "ConnectError"),
        # Without the CA the server's certificate is untrusted.
        (lambda p: p["tls"].pop("caSecret"), PrometheusUnavailable, "ConnectError"),
        # The server requires a client certificate.
        (
            lambda p: [p["tls"].pop("certSecret"), p["tls"].pop("keySecret")],
            PrometheusUnavailable,
            "unreachable",
        ),
    ],
    ids=["wrong-password", "no-server-name", "no-ca", "no-client-certificate"],
)
async def test_each_credential_is_needed(
    operator_api: KubeApi,
    kube_cluster: Any,
    namespace: str,
    secured_secrets: Any,
    change: Any,
    error: type[Exception],
    message: str,
) -> None:
    secured = secured_secrets
    _secret(kube_cluster, namespace, "prometheus-wrong", wrong="not-the-password")
    prometheus = copy.deepcopy(_secured(secured))
    change(prometheus)
    endpoint = await _endpoint(operator_api, namespace, _spec(secured.server.url, **prometheus))
    with pytest.raises(error, match=message):
        await _query(endpoint)


async def test_bearer_token_from_a_secret(
    operator_api: KubeApi,
    kube_cluster: Any,
    namespace: str,
    prometheus_server: Any,
    nginx_server: Any,
) -> None:
    nginx_server.apply_http_config(
        f"server {{ listen 127.0.0.1:{nginx_server.port};\n"
        f'  location / {{ if ($http_authorization != "Bearer {BEARER_TOKEN}") {{ return 401; }}\n'
        f"    proxy_pass {prometheus_server.url}; }} }}\n"
    )
    _secret(kube_cluster, namespace, "prometheus-token", token=BEARER_TOKEN)
    _secret(kube_cluster, namespace, "other-token", token="not-" + BEARER_TOKEN)
    good = _spec(nginx_server.url, bearerTokenSecret={"name": "prometheus-token", "key": "token"})
    assert await _query(await _endpoint(operator_api, namespace, good)) == 42.0
    bad = _spec(nginx_server.url, bearerTokenSecret={"name": "other-token", "key": "token"})
    with pytest.raises(PrometheusAuthError, match="HTTP 401"):
        await _query(await _endpoint(operator_api, namespace, bad))


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("missing", "Prometheus credentials: Secret missing not found in namespace"),
        ("prometheus-auth", "Prometheus credentials: prometheus-auth has no key token"),
    ],
)
async def test_a_missing_secret_or_key_holds_the_analysis_with_its_reason(
    operator_api: KubeApi, namespace: str, secured_secrets: Any, secret: str, reason: str
) -> None:
    spec = _spec(secured_secrets.server.url, bearerTokenSecret={"name": secret, "key": "token"})
    endpoint = await _endpoint(operator_api, namespace, spec)
    assert endpoint.url is None
    assert endpoint.refused is not None
    assert endpoint.refused.startswith(reason)
    config = CanaryConfig.from_spec(spec)
    readings = await read_readings(_cad(namespace, spec), config, CanaryStatus(), endpoint)
    assert {r.value for r in readings} == {None}
    assert {r.error for r in readings} == {endpoint.refused}


async def test_credentials_never_go_to_the_operators_prometheus(
    operator_api: KubeApi, namespace: str, secured_prometheus_server: Any
) -> None:
    """With --no-cr-prometheus-url the CR's URL is ignored, and so are its Secrets: none is
    read (this one does not even exist), and the operator's URL gets no CR credentials."""
    spec = _spec(
        secured_prometheus_server.server.url,
        bearerTokenSecret={"name": "does-not-exist", "key": "token"},
    )
    policy = PrometheusPolicy("http://operator-prometheus:9090", allow_cr_url=False)
    endpoint = await prometheus_endpoint(operator_api, namespace, spec, policy)
    assert endpoint == PrometheusEndpoint("http://operator-prometheus:9090")


def test_credentials_keep_their_values_out_of_repr() -> None:
    credentials = PrometheusCredentials(
        bearer_token="tok", basic_auth=("user", "pass"), key_pem="-----BEGIN PRIVATE KEY-----"
    )
    text = repr(credentials)
    assert "tok" not in text
    assert "pass" not in text
    assert "PRIVATE" not in text
    assert credentials.headers() == {"Authorization": "Bearer tok"}


def test_auth_from_spec() -> None:
    spec = _spec("https://prom", **_secured(type("S", (), {"server_name": "prom.svc"})))
    auth = PrometheusAuth.from_spec(spec)
    assert auth.secret_names() == ["prometheus-auth", "prometheus-ca", "prometheus-client"]
    assert auth.server_name == "prom.svc"
    assert not auth.insecure_skip_verify
    assert PrometheusAuth.from_spec({"image": "x"}).empty


async def test_the_operators_own_prometheus_with_credentials_from_files(
    operator_api: KubeApi, namespace: str, secured_prometheus_server: Any, tmp_path: Path
) -> None:
    """--prometheus-url with the operator's CA, client certificate and basic auth (files,
    as a mounted Secret gives them): used for CRs that name no Prometheus, never sent to a
    CR's own URL."""
    secured = secured_prometheus_server
    password = tmp_path / "password"
    password.write_text(secured.password + "\n")
    argv = [
        f"--prometheus-url={secured.server.url}",
        f"--prometheus-ca-file={secured.pki.ca.cert}",
        f"--prometheus-cert-file={secured.pki.client.cert}",
        f"--prometheus-key-file={secured.pki.client.key}",
        f"--prometheus-username={secured.username}",
        f"--prometheus-password-file={password}",
        f"--prometheus-server-name={secured.server_name}",
    ]
    policy = PrometheusPolicy.of_config(parse_config(argv, environ={}))
    spec: dict[str, Any] = {"image": "registry.local/cricalgo:1.0.0"}
    endpoint = await prometheus_endpoint(operator_api, namespace, spec, policy)
    assert endpoint.url == secured.server.url
    assert await _query(endpoint) == 42.0
    # A CR's own Prometheus gets none of the operator's credentials.
    elsewhere = _spec("https://prometheus.team.example:9090")
    assert await prometheus_endpoint(operator_api, namespace, elsewhere, policy) == (
        PrometheusEndpoint("https://prometheus.team.example:9090")
    )
    # A missing file holds the analysis with the reason, like a missing Secret.
    password.unlink()
    endpoint = await prometheus_endpoint(operator_api, namespace, spec, policy)
    assert endpoint.url is None
    assert endpoint.refused == "the operator's Prometheus credentials: No such file or directory"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--prometheus-bearer-token-file=/t", "--prometheus-username=u"],
            "a bearer token file or basic auth, not both",
        ),
        (["--prometheus-username=u"], "needs both --prometheus-username and a password file"),
        (["--prometheus-cert-file=/c"], "needs both its cert and key files"),
    ],
)
def test_operator_credentials_flags_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, environ={})


def test_operator_credentials_from_the_environment() -> None:
    environ = {"CRICALGO_PROMETHEUS_BEARER_TOKEN_FILE": "/var/run/secrets/token"}
    files = parse_config([], environ=environ).prometheus_files
    assert files == PrometheusFiles(bearer_token_file="/var/run/secrets/token")
