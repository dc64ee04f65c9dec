"""Kubeconfig files for the local control plane (pure rendering plus one writer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONTEXT = "cricalgo-local"


def render_kubeconfig(
    server: str,
    ca_file: Path,
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    user: str = "admin",
) -> dict[str, Any]:
    """A kubeconfig that reaches `server`, authenticating by certificate or bearer token."""
    if token is None and (client_cert is None or client_key is None):
        raise ValueError("a kubeconfig needs a client certificate and key, or a token")
    credentials: dict[str, str] = (
        {"token": token}
        if token is not None
        else {"client-certificate": str(client_cert), "client-key": str(client_key)}
    )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": "default"}}
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    """Write a kubeconfig readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
