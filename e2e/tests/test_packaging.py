"""What the product ships: the wheel carries the operator, the workload and the kubectl
plugin, none of the harness; each role runs on its own extra's dependencies alone."""

from __future__ import annotations

import email
import email.message
import importlib.metadata as md
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
HARNESS_DEPENDENCIES = {"kubernetes", "cryptography", "pytest", "hypothesis"}
SERVER_DEPENDENCIES = {"starlette", "uvicorn", "psycopg", "dramatiq", "redis", "orjson"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def role_closure(role: str) -> set[str]:
    """The distributions `pip install cricalgo[ROLE]` brings, from the installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [("cricalgo", frozenset({role}))]
    while todo:
        name, extras = todo.pop()
        if (_norm(name), extras) in seen:
            continue
        seen.add((_norm(name), extras))
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            envs = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in envs):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen} - {"cricalgo"}


def _import_as_role(role: str, modules: list[str], tmp_path: Path) -> tuple[set[str], set[str]]:
    """Import `modules` in an interpreter that sees the standard library, the source of the
    two runtime packages and the role's dependency closure only, as an image that installed
    `cricalgo[ROLE]` would. Returns (the closure, the top-level modules loaded)."""
    closure = role_closure(role)
    site = tmp_path / f"site-{role}"
    site.mkdir()
    for name in closure:
        dist = md.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if top != ".." and source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    probe = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {[str(site), str(ROOT / 'operator'), str(ROOT / 'workload')]!r}\n"
        f"for module in {modules!r}: importlib.import_module(module)\n"
        "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return closure, set(json.loads(result.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's wheel, built as `make dist` builds it."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        timeout=600,
    )
    (built,) = out.glob("cricalgo-*.whl")
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_the_wheel_carries_the_two_runtime_packages_and_no_harness(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {n: archive.read(n).decode() for n in names if n.endswith(".py")}
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"cricalgo_operator", "cricalgo_workload"}
    leaked = [n for n in names if "/tests/" in n or "/bench" in n or n.endswith("testing.py")]
    assert leaked == []
    importing_harness = [n for n, text in sources.items() if "cricalgo_localstack" in text]
    assert importing_harness == []
    # The package data the roles read at run time is there.
    assert "cricalgo_operator/rbac/role.yaml" in names
    assert any(n.startswith("cricalgo_workload/migrations/") and n.endswith(".sql") for n in names)


def test_the_wheel_installs_the_roles_commands_and_not_the_local_stack(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        entry_points = archive.read(name).decode()
    assert "cricalgo-operator = cricalgo_operator.main:main" in entry_points
    assert "cricalgo-workload = cricalgo_workload.cli:main" in entry_points
    assert "kubectl-cricalgo = cricalgo_operator.plugin:main" in entry_points
    assert "cricalgo_localstack" not in entry_points


def test_each_role_has_its_extra_and_the_bare_install_pulls_nothing(wheel: Path) -> None:
    metadata = _metadata(wheel)
    bare = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert bare == []
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"kubectl", "operator", "workload", "dev"} <= extras


def _runtime_modules(package: str) -> list[str]:
    root = ROOT / ("operator" if package == "cricalgo_operator" else "workload") / package
    return sorted(
        ".".join((package, *path.relative_to(root).with_suffix("").parts))
        .removesuffix(".__init__")
        .removesuffix(".__main__")
        for path in root.rglob("*.py")
        if path.name != "__main__.py"
    )


def test_the_kubectl_plugin_imports_with_its_extra_alone(tmp_path: Path) -> None:
    closure, loaded = _import_as_role("kubectl", ["cricalgo_operator.plugin"], tmp_path)
    assert closure.isdisjoint(SERVER_DEPENDENCIES | HARNESS_DEPENDENCIES)
    assert "cricalgo_operator" in loaded


def test_every_operator_module_imports_with_the_operator_extra_alone(tmp_path: Path) -> None:
    modules = _runtime_modules("cricalgo_operator")
    closure, loaded = _import_as_role("operator", modules, tmp_path)
    assert closure.isdisjoint(SERVER_DEPENDENCIES | HARNESS_DEPENDENCIES)
    assert {"cricalgo_operator", "kopf"} <= loaded


def test_every_workload_module_imports_with_the_workload_extra_alone(tmp_path: Path) -> None:
    modules = _runtime_modules("cricalgo_workload")
    closure, loaded = _import_as_role("workload", modules, tmp_path)
    assert closure.isdisjoint(HARNESS_DEPENDENCIES | {"kopf", "kubernetes"})
    assert {"cricalgo_workload", "dramatiq", "starlette"} <= loaded
