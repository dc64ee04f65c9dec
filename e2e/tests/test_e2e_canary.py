"""End to end on the local stack: the operator promotes a healthy canary and rolls back a
faulty one while signed deposits flow through the mesh, and every deposit answered 202 is
credited exactly once in PostgreSQL.

The scenario is `cricalgo dev demo`'s (cricalgo_localstack.demo); it needs the local stack
(no kind variant yet: the demo starts the operator as a process against the local API).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cricalgo_localstack.demo import run_scenarios
from cricalgo_localstack.processes import pid_alive
from cricalgo_localstack.stack import LocalStack, read_state, stop_recorded

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]


@pytest.mark.skipif(
    os.environ.get("E2E_CLUSTER") == "kind",
    reason="the scenario drives the local stack's own operator process and mesh",
)
def test_canary_promotes_v2_rolls_back_v3_and_loses_no_deposit(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    pids: dict[str, int] = {}
    report = ""
    stack = LocalStack(state_dir)
    result = None
    try:
        stack.start()
        result = run_scenarios(state_dir)
        assert result.report is not None
        report = result.report.read_text()
        state = read_state(state_dir)
        assert state is not None
        pids = {name: int(pid) for name, pid in state["pids"].items()}
    finally:
        if result is not None and result.operator is not None:
            result.operator.stop()
        stack.stop()
        stop_recorded(state_dir)

    assert result is not None
    assert result.error is None
    assert result.outcomes == ["promoted", "rolledBack"]
    assert result.accepted > 0
    assert result.lost == 0
    assert result.doubled == 0
    # The faulty canary's injected errors reached the mesh before the rollback.
    assert result.mesh_answers["canary v3 (faulty)"][500] > 0
    assert "<polyline" in report
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
