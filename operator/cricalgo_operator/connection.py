"""Where the operator's credentials come from: a kubeconfig file, else the pod's token.

Both Kopf (through its login handler) and our own API client use the one
`kopf.ConnectionInfo` this module returns, so they always act as the same identity.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import kopf
import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def load_connection(kubeconfig: str | None) -> kopf.ConnectionInfo:
    """Credentials from `kubeconfig` (current context) or, without one, the in-cluster token."""
    if kubeconfig:
        return _from_kubeconfig(Path(kubeconfig).expanduser())
    if (SA_DIR / "token").exists():
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        namespace = SA_DIR / "namespace"
        return kopf.ConnectionInfo(
            server=f"https://{host}:{port}",
            ca_path=str(SA_DIR / "ca.crt"),
            token=(SA_DIR / "token").read_text().strip(),
            default_namespace=namespace.read_text().strip() if namespace.exists() else None,
        )
    raise kopf.LoginError("no kubeconfig given and no service-account token mounted")


def _from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    current = config.get("current-context")
    if not current:
        raise kopf.LoginError(f"{path}: current-context is not set")

    def named(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise kopf.LoginError(f"{path}: no {section[:-1]} named {name!r}")

    context = named("contexts", current)
    cluster = named("clusters", context["cluster"])
    user = named("users", context["user"])
    base = path.parent

    def rel(value: str | None) -> str | None:
        return str(base / value) if value and not os.path.isabs(value) else value

    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=rel(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=rel(user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=rel(user.get("client-key")),
        private_key_data=user.get("client-key-data"),
        token=user.get("token"),
        default_namespace=context.get("namespace"),
    )


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """An SSL context for httpx that trusts the cluster CA and presents the client cert."""
    if info.insecure:
        return False
    if info.ca_path:
        context = ssl.create_default_context(cafile=os.fsdecode(info.ca_path))
    elif info.ca_data:
        context = ssl.create_default_context(cadata=_pem(info.ca_data))
    else:
        context = ssl.create_default_context()
    cert = _as_file(info.certificate_path, info.certificate_data)
    key = _as_file(info.private_key_path, info.private_key_data)
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def _pem(data: str | bytes) -> str:
    """Kubeconfig `*-data` fields are base64 of PEM."""
    return base64.b64decode(data).decode()


def _as_file(path: Any, data: str | bytes | None) -> str | None:
    if path:
        return os.fsdecode(path)
    if not data:
        return None
    # ssl only loads client certificates from files.
    handle = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(_pem(data))
    return handle.name
