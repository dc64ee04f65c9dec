"""Credentials for a CR's own Prometheus: a bearer token or basic auth, a CA bundle and a
client certificate, each a key of a Secret in the CR's namespace.

`PrometheusAuth` is what the spec asks for (pure); `read_credentials` reads the Secrets at
every analysis, so a rotated Secret is used from the next analysis on; `PrometheusCredentials`
turns them into the HTTP client's headers and TLS context. Secret values never reach a
message: errors name the Secret and key, not what they hold.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi

from cricalgo_operator.canary.prometheus_policy import PrometheusFiles, PrometheusPolicy
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.secret_refs import SecretKey, SecretRefError, read_secret, secret_value

# A Secret that cannot be read and PEM that does not load are both the spec's to fix.
CredentialsError = SecretRefError


@dataclass(frozen=True)
class PrometheusAuth:
    """`spec.canary.prometheus`'s credentials, as Secret references."""

    bearer_token: SecretKey | None = None
    username: SecretKey | None = None
    password: SecretKey | None = None
    ca: SecretKey | None = None
    cert: SecretKey | None = None
    key: SecretKey | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> PrometheusAuth:
        """From a CricAlgoDeployment's `spec`."""
        prometheus: Mapping[str, Any] = (spec.get("canary") or {}).get("prometheus") or {}
        basic: Mapping[str, Any] = prometheus.get("basicAuth") or {}
        tls: Mapping[str, Any] = prometheus.get("tls") or {}
        return cls(
            bearer_token=SecretKey.of(prometheus.get("bearerTokenSecret")),
            username=SecretKey.of(basic.get("username")),
            password=SecretKey.of(basic.get("password")),
            ca=SecretKey.of(tls.get("caSecret")),
            cert=SecretKey.of(tls.get("certSecret")),
            key=SecretKey.of(tls.get("keySecret")),
            server_name=tls.get("serverName") or None,
            insecure_skip_verify=bool(tls.get("insecureSkipVerify", False)),
        )

    @property
    def empty(self) -> bool:
        return self == PrometheusAuth()

    def secret_names(self) -> list[str]:
        """Each Secret referenced, once, in a stable order."""
        refs = (self.bearer_token, self.username, self.password, self.ca, self.cert, self.key)
        return list(dict.fromkeys(ref.name for ref in refs if ref is not None))


@dataclass(frozen=True)
class PrometheusCredentials:
    """What the HTTP client sends and trusts. The values never appear in a repr."""

    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    server_name: str | None = None
    insecure_skip_verify: bool = False

    def headers(self) -> dict[str, str]:
        if self.bearer_token:
            return {"Authorization": f"Bearer {self.bearer_token}"}
        if self.basic_auth:
            user, password = self.basic_auth
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {}

    @property
    def customises_tls(self) -> bool:
        return bool(self.ca_pem or self.cert_pem or self.insecure_skip_verify)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context: the CA bundle given (else the usual public roots), the client
        certificate if any. Raises CredentialsError for PEM that does not load."""
        try:
            if self.ca_pem:
                context = ssl.create_default_context(cadata=self.ca_pem)
            else:
                context = ssl.create_default_context(cafile=certifi.where())
        except ssl.SSLError as error:
            reason = error.reason
            raise CredentialsError(f"the CA bundle is not PEM certificates ({reason})") from None
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            _load_client_certificate(context, self.cert_pem, self.key_pem)
        return context


def _load_client_certificate(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """`ssl` loads a certificate chain from paths only: an anonymous in-memory file, closed
    once loaded, keeps the key off every disk."""
    fds = [os.memfd_create("cricalgo-prometheus", os.MFD_CLOEXEC) for _ in range(2)]
    try:
        for fd, pem in zip(fds, (cert_pem, key_pem), strict=True):
            os.write(fd, pem.encode())
        cert, key = (f"/proc/self/fd/{fd}" for fd in fds)
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise CredentialsError(
            f"the client certificate and key do not load ({error.reason})"
        ) from None
    finally:
        for fd in fds:
            os.close(fd)


async def read_credentials(
    api: KubeApi, namespace: str, auth: PrometheusAuth
) -> PrometheusCredentials:
    """Read every Secret `auth` names (each once) and build the credentials."""
    secrets = {name: await read_secret(api, namespace, name) for name in auth.secret_names()}

    def value(ref: SecretKey | None) -> str | None:
        return None if ref is None else secret_value(secrets[ref.name], ref)

    username, password = value(auth.username), value(auth.password)
    return PrometheusCredentials(
        bearer_token=value(auth.bearer_token),
        basic_auth=(username, password) if username is not None and password is not None else None,
        ca_pem=value(auth.ca),
        cert_pem=value(auth.cert),
        key_pem=value(auth.key),
        server_name=auth.server_name,
        insecure_skip_verify=auth.insecure_skip_verify,
    )


def read_files(files: PrometheusFiles) -> PrometheusCredentials:
    """The operator's own credentials, read from their files now (blocking: run it in a
    thread). The TLS material is checked to load."""

    def text(path: str | None) -> str | None:
        return Path(path).read_text().strip() if path else None

    password = text(files.password_file)
    credentials = PrometheusCredentials(
        bearer_token=text(files.bearer_token_file),
        basic_auth=(files.username, password) if files.username and password is not None else None,
        ca_pem=text(files.ca_file),
        cert_pem=text(files.cert_file),
        key_pem=text(files.key_file),
        server_name=files.server_name,
    )
    if credentials.customises_tls:
        credentials.ssl_context()
    return credentials


@dataclass(frozen=True)
class PrometheusEndpoint:
    """The Prometheus one analysis reads and how, or why it reads none (`refused`)."""

    url: str | None
    credentials: PrometheusCredentials | None = None
    refused: str | None = None


async def prometheus_endpoint(
    api: KubeApi, namespace: str, spec: Mapping[str, Any], policy: PrometheusPolicy
) -> PrometheusEndpoint:
    """The CR's Prometheus (with its credentials) or the operator's, under the policy.

    A CR's credentials only ever go to the CR's own URL: when the policy falls back to the
    operator's Prometheus, none of them is read."""
    prometheus: Mapping[str, Any] = (spec.get("canary") or {}).get("prometheus") or {}
    cr_url = prometheus.get("url")
    choice = policy.choose(cr_url)
    if choice.url is None:
        return PrometheusEndpoint(None, refused=choice.refused)
    auth = PrometheusAuth.from_spec(spec)
    if choice.url != cr_url or auth.empty:
        if choice.url != policy.url or policy.files.empty:
            return PrometheusEndpoint(choice.url)
        # The operator's own Prometheus, with the operator's own credentials.
        try:
            own = await asyncio.to_thread(read_files, policy.files)
        except (OSError, CredentialsError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            return PrometheusEndpoint(
                None, refused=f"the operator's Prometheus credentials: {reason}"
            )
        return PrometheusEndpoint(choice.url, own)
    try:
        credentials = await read_credentials(api, namespace, auth)
        if credentials.customises_tls:
            credentials.ssl_context()  # PEM that does not load is the spec's fault: say so
    except CredentialsError as error:
        return PrometheusEndpoint(None, refused=f"Prometheus credentials: {error}")
    return PrometheusEndpoint(choice.url, credentials)
