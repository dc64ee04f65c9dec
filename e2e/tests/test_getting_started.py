"""docs/getting-started.md, executed: every `sh` block of the page, in order, in bash, on a
fresh local stack, so the document cannot drift from the product.

What differs from a user's cluster, and how (each is said in the page or here):
- the block that sets the variables (`<!-- docs-test: set -->`) is run with the stack's
  values instead of the placeholders: images `cricalgo/operator` and `cricalgo/workload`
  (the local node runs `cricalgo/*` images as the virtualenv's console scripts, so nothing
  is pushed), the stack's Prometheus, a fresh database on its PostgreSQL, its Redis;
- blocks marked `<!-- docs-test: skip (reason) -->` are not run (building and pushing images
  with Docker, installing the wheel); the test checks that only those are skipped;
- `kubectl` and `helm` are the stack's builds and `kubectl cricalgo` the virtualenv's plugin,
  all on PATH, with KUBECONFIG set to the stack's admin kubeconfig;
- the stack installs the project's CRD when it starts; the test deletes it first, so the
  page's `helm install` installs it as it would on a new cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cricalgo_localstack.binaries import ensure_helm
from cricalgo_localstack.clusters import LocalCluster
from cricalgo_localstack.processes import pid_alive
from cricalgo_localstack.stack import LocalStack, read_state, stop_recorded

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "getting-started.md"
FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!-- docs-test: (set|skip) ?(\((.*)\))? ?-->\s*$")
BLOCK_TIMEOUT = 900


@dataclass
class Block:
    number: int
    code: str
    marker: str | None  # "set", "skip" or None
    reason: str = ""


def page_blocks(text: str) -> list[Block]:
    """The `sh` blocks in order, each with the marker on the line before it, if any."""
    blocks = []
    for number, match in enumerate(FENCE.finditer(text), start=1):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        blocks.append(
            Block(
                number,
                match.group(1),
                marker.group(1) if marker else None,
                (marker.group(3) or "") if marker else "",
            )
        )
    return blocks


def test_the_page_marks_only_what_the_local_stack_cannot_run() -> None:
    blocks = page_blocks(PAGE.read_text())
    assert [b.marker for b in blocks].count("set") == 1
    skipped = [b for b in blocks if b.marker == "skip"]
    assert all(b.reason for b in skipped)
    # Docker builds and the wheel install; everything else runs.
    assert [("docker push" in b.code or "pip install" in b.code) for b in skipped] == [True] * len(
        skipped
    )
    assert len(skipped) == 2


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalCluster]:
    state_dir = tmp_path / "stack"
    stack = LocalStack(state_dir)
    pids: dict[str, int] = {}
    try:
        stack.start()
        cluster = LocalCluster(state_dir)
        yield cluster
        cluster.close()
        state = read_state(state_dir)
        assert state is not None
        pids = {name: int(pid) for name, pid in state["pids"].items()}
    finally:
        stack.stop()
        stop_recorded(state_dir)
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []


def stack_values(cluster: LocalCluster) -> str:
    import psycopg

    with psycopg.connect(cluster.admin_dsn(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "getting_started"')
    return "\n".join(
        [
            "export REGISTRY=cricalgo",
            "export VERSION=0.1.0",
            "export NEXT_VERSION=0.1.1",
            f"export PROMETHEUS_URL={cluster.prometheus_url()}",
            f"export DATABASE_DSN='{cluster.pod_dsn('getting_started')}'",
            f"export REDIS_URL='{cluster.pod_redis_url()}'",
        ]
    )


# A fresh stack, an operator install, a rollout and an uninstall: 7 minutes measured on a
# loaded 2-core machine; the suite's default per-test timeout (600 s) is too close.
@pytest.mark.timeout(1500)
def test_getting_started_runs_end_to_end(stack: LocalCluster, tmp_path: Path) -> None:
    kubectl = stack.kubectl[0]
    subprocess.run(
        [*stack.kubectl, "delete", "crd", "cricalgodeployments.cricalgo.io", "--wait=true"],
        check=True,
        capture_output=True,
    )
    # A directory of its own (the page writes a script), with the checkout's charts and docs.
    work = tmp_path / "work"
    work.mkdir()
    for name in ("charts", "docs"):
        (work / name).symlink_to(REPO / name)
    env = {
        **os.environ,
        "KUBECONFIG": str(stack.kubeconfig),
        "PATH": os.pathsep.join(
            [
                str(Path(kubectl).parent),
                str(ensure_helm().parent),
                str(Path(sys.executable).parent),
                os.environ.get("PATH", ""),
            ]
        ),
        "HOME": str(tmp_path / "home"),  # helm's config and cache
    }
    values = stack_values(stack)
    outputs: list[str] = []
    for block in page_blocks(PAGE.read_text()):
        if block.marker == "skip":
            print(f"--- block {block.number}: skipped ({block.reason})")
            continue
        code = values if block.marker == "set" else block.code
        print(f"--- block {block.number}:\n{code}")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{values}\n{code}"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        assert proc.returncode == 0, f"block {block.number} failed:\n{code}\n{proc.stderr}"
        outputs.append(proc.stdout)
    everything = "\n".join(outputs)
    # The first canary was promoted, and the pipeline's script said so.
    assert "cricalgo/workload:0.1.1\n" in everything
    assert "payments: True: cricalgo/workload:0.1.1 is stable" in everything
    # Uninstalled: no CRD, no namespaces left.
    crds = subprocess.run(
        [*stack.kubectl, "get", "crd", "-o", "name"], capture_output=True, text=True, check=True
    ).stdout
    assert "cricalgodeployments.cricalgo.io" not in crds
