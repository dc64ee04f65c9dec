"""Where the operator's credentials come from: a kubeconfig file, else the pod's token.

Both Kopf (through its login handler) and our own API client use the one
`kopf.ConnectionInfo` this module returns, so they always act as the same identity.
A client key embedded in a kubeconfig is kept in memory only, never written to disk.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import kopf
import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def load_connection(kubeconfig: str | None, sa_dir: Path | None = None) -> kopf.ConnectionInfo:
    """Credentials from `kubeconfig` (current context) or, without one, the in-cluster token.

    Called again whenever Kopf's login handler runs (at start and after a 401), so a
    rotated token file is read afresh.
    """
    if kubeconfig:
        return _from_kubeconfig(Path(kubeconfig).expanduser())
    sa_dir = sa_dir or SA_DIR
    if (sa_dir / "token").exists():
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        namespace = sa_dir / "namespace"
        return kopf.ConnectionInfo(
            server=f"https://{host}:{port}",
            ca_path=str(sa_dir / "ca.crt"),
            token=(sa_dir / "token").read_text().strip(),
            default_namespace=namespace.read_text().strip() if namespace.exists() else None,
        )
    raise kopf.LoginError("no kubeconfig given and no service-account token mounted")


def token_file(kubeconfig: str | None, sa_dir: Path | None = None) -> str | None:
    """The file the bearer token is read from, if any: bound tokens expire and are
    rotated in place by the kubelet, so clients re-read it rather than keep the first."""
    if not kubeconfig:
        path = (sa_dir or SA_DIR) / "token"
        return str(path) if path.exists() else None
    path = Path(kubeconfig).expanduser()
    config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    context = _named(config, path, "contexts", config.get("current-context") or "")
    user = _named(config, path, "users", context.get("user") or "")
    found = user.get("tokenFile")
    if not found:
        return None
    return found if os.path.isabs(found) else str(path.parent / found)


def _named(config: dict[str, Any], path: Path, section: str, name: str) -> dict[str, Any]:
    for item in config.get(section) or []:
        if item.get("name") == name:
            return dict(item.get(section[:-1]) or {})
    raise kopf.LoginError(f"{path}: no {section[:-1]} named {name!r}")


def _token(token: str | None, path: str | None) -> str | None:
    if token or not path:
        return token
    return Path(path).read_text().strip()


def _from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    current = config.get("current-context")
    if not current:
        raise kopf.LoginError(f"{path}: current-context is not set")

    context = _named(config, path, "contexts", current)
    cluster = _named(config, path, "clusters", context["cluster"])
    user = _named(config, path, "users", context["user"])
    base = path.parent

    def rel(value: str | None) -> str | None:
        return str(base / value) if value and not os.path.isabs(value) else value

    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=rel(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=rel(user.get("client-certificate"))
        or _in_memory(user.get("client-certificate-data")),
        private_key_path=rel(user.get("client-key")) or _in_memory(user.get("client-key-data")),
        token=_token(user.get("token"), rel(user.get("tokenFile"))),
        default_namespace=context.get("namespace"),
    )


def _pem(data: str | bytes) -> str:
    """Kubeconfig `*-data` fields are base64 of PEM."""
    return base64.b64decode(data).decode()


# One anonymous in-memory file per distinct PEM, kept open for the process's lifetime:
# `ssl` loads client certificates only from paths, and /proc/self/fd/N of a memfd is a
# path whose bytes never reach a disk (a temporary file would, and could be left behind).
_memory_files: dict[str, int] = {}


def _in_memory(data: str | bytes | None) -> str | None:
    if not data:
        return None
    pem = _pem(data)
    fd = _memory_files.get(pem)
    if fd is None:
        fd = os.memfd_create("cricalgo-credential", os.MFD_CLOEXEC)
        os.write(fd, pem.encode())
        _memory_files[pem] = fd
    return f"/proc/self/fd/{fd}"
