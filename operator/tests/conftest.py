"""Fixtures shared by the operator's tests: the CRD installed on the real API server."""

from __future__ import annotations

import importlib.util
import json
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest


def _restore_stdlib_operator() -> None:
    """Undo pytest's shadowing of the standard library's `operator` module.

    With `--import-mode=importlib`, pytest imports this directory as the package
    `operator.tests`; the stdlib `operator` has no `__path__`, so pytest re-imports the
    repository's `operator/` directory under that name and replaces `sys.modules["operator"]`
    (pytest's _import_module_using_spec). Any later `from operator import add` (hypothesis,
    sortedcontainers, ...) then fails. Parents are imported before this file runs, so
    putting the real module back here keeps every later import working.
    """
    current = sys.modules.get("operator")
    if current is not None and hasattr(current, "itemgetter"):
        return
    spec = importlib.util.spec_from_file_location(
        "operator", Path(sysconfig.get_path("stdlib")) / "operator.py"
    )
    assert spec is not None
    assert spec.loader is not None
    stdlib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stdlib)
    if current is not None and hasattr(current, "tests"):
        stdlib.tests = current.tests  # type: ignore[attr-defined]
    sys.modules["operator"] = stdlib


_restore_stdlib_operator()


def _load_helper(name: str) -> None:
    """Register a helper module beside this file (tests directories are not packages
    here), so test modules can `import` it by its bare name."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load_helper("canary_traffic")
# The operator-process harness of test_operator_cluster, shared with test_operator_hardening.
_load_helper("test_operator_cluster")
# The canary harness of test_canary_cluster, shared with test_operator_peering.
_load_helper("test_canary_cluster")

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
    # `kubectl wait` fails outright while the CRD has no conditions yet, so poll.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        crd = json.loads(
            kube_cluster.kubectl("get", "crd/cricalgodeployments.cricalgo.io", "-o", "json").stdout
        )
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the CricAlgoDeployment CRD was not established within 60 s")
    return CRD_PATH
