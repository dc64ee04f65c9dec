"""The load runner behind `make load`: its statistics, its thresholds, and a short real run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "load" / "webhook_load.py"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_load", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["webhook_load"] = module
    spec.loader.exec_module(module)
    return module


def test_percentiles_by_nearest_rank(load: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 50.0
    assert load.percentile(values, 95) == 95.0
    assert load.percentile(values, 99) == 99.0
    assert load.percentile([7.0], 99) == 7.0


def test_thresholds_pass_and_fail_like_k6(load: ModuleType) -> None:
    fast = load.Results(webhook_ms=[10.0] * 1000, health_ms=[1.0], statuses={202: 1000})
    summary, passed = load.summarize(fast, 10.0)
    assert passed
    assert "✓ webhook_errors rate < 0.5%: 0.000%" in summary

    slow = load.Results(webhook_ms=[10.0] * 90 + [2500.0] * 10, statuses={202: 100})
    summary, passed = load.summarize(slow, 10.0)
    assert not passed
    assert "✗ webhook_duration p(95) < 2000ms: 2500.0ms" in summary

    failing = load.Results(webhook_ms=[10.0] * 100, webhook_errors=1, statuses={202: 99, 503: 1})
    summary, passed = load.summarize(failing, 10.0)
    assert not passed
    assert "✗ webhook_errors rate < 0.5%: 1.000%" in summary


@pytest.mark.slow
def test_a_short_local_run_credits_signed_deposits() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--local", "--vus", "2", "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status codes       {202:" in result.stdout
    assert "✗" not in result.stdout
