"""Settings from the environment (pure)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cricalgo_workload.settings import Settings, SettingsError


def test_defaults_and_pool_sizes() -> None:
    settings = Settings.from_env({"DB_POOL_SIZE": "20", "DB_MAX_OVERFLOW": "5"})
    assert (settings.db_pool_size, settings.pool_max_size) == (20, 25)
    assert settings.webhook_secrets == ()
    assert settings.fault_error_rate == 0.0
    assert settings.fault_latency_ms == 0


def test_statement_timeout_stays_inside_the_actor_time_limit() -> None:
    for limit in ("200", "1000", "30000"):
        settings = Settings.from_env({"CRICALGO_TASK_TIME_LIMIT_MS": limit})
        assert settings.statement_timeout_ms < settings.task_time_limit_ms


OLD, NEW = "whsec_" + "A" * 32, "whsec_" + "B" * 32  # 24 bytes each


def test_rotation_secrets_are_space_separated() -> None:
    settings = Settings.from_env({"CRICALGO_WEBHOOK_SECRET": f"{OLD} {NEW}"})
    assert settings.webhook_secrets == (OLD, NEW)


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env({"CRICALGO_WEBHOOK_SECRET": OLD, "CRICALGO_API_TOKEN": "t0k"})
    assert "whsec_" not in repr(settings)
    assert "t0k" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_POOL_SIZE": "many"}, "DB_POOL_SIZE must be an integer"),
        ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE must be >= 1"),
        ({"DB_MAX_OVERFLOW": "-1"}, "DB_MAX_OVERFLOW must be >= 0"),
        ({"CRICALGO_FAULT_ERROR_RATE": "1.5"}, "between 0.0 and 1.0"),
        ({"DB_POOL_TIMEOUT": "soon"}, "DB_POOL_TIMEOUT must be a number"),
        ({"CRICALGO_WEBHOOK_SECRET": "plain"}, "must start with whsec_"),
        ({"CRICALGO_WEBHOOK_SECRET": "whsec_"}, "entry 1: .* 0 bytes; at least 24"),
        ({"CRICALGO_WEBHOOK_SECRET": f"{OLD} whsec_YQ=="}, "entry 2: .* 1 bytes; at least 24"),
        ({"CRICALGO_WEBHOOK_SECRET": "whsec_" + "A" * 31 + "="}, "23 bytes; at least 24"),
        ({"CRICALGO_WEBHOOK_SECRET": "whsec_not base64!"}, "entry 1: .*base64"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_webhook_refuses_to_start_with_a_short_secret() -> None:
    """A real `cricalgo-workload webhook` process, before it opens any port."""
    result = subprocess.run(
        [sys.executable, "-m", "cricalgo_workload", "webhook"],
        env={**os.environ, "CRICALGO_WEBHOOK_SECRET": "whsec_"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "CRICALGO_WEBHOOK_SECRET entry 1" in result.stderr
    assert "0 bytes; at least 24" in result.stderr
