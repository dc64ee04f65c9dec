"""Fixtures shared by the operator's tests: the CRD installed on the real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "cricalgodeployment.yaml"


@pytest.fixture(scope="session")
def cad_crd(kube_cluster: Any) -> Path:
    """The CricAlgoDeployment CRD, applied from `crds/` and established."""
    kube_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=cricalgo-tests",
        "-f",
        str(CRD_PATH),
    )
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/cricalgodeployments.cricalgo.io",
        "--timeout=60s",
    )
    return CRD_PATH
