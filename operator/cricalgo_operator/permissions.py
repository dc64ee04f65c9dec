"""The operator's RBAC manifests (rbac/clusterrole.yaml and rbac/role.yaml) as dicts."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def rbac_manifests() -> tuple[dict[str, Any], dict[str, Any]]:
    """(ClusterRole, Role): the same rules, for cluster-wide and single-namespace mode."""
    folder = resources.files("cricalgo_operator") / "rbac"
    cluster_role = yaml.safe_load((folder / "clusterrole.yaml").read_text())
    role = yaml.safe_load((folder / "role.yaml").read_text())
    return cluster_role, role
