"""Re-driving dead letters against real Redis and PostgreSQL: a dead-lettered deposit is
left alone by a stale message, and `cricalgo-workload redrive` gets it credited once."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from cricalgo_localstack.workload_processes import wait_for
from cricalgo_workload.cli import main
from cricalgo_workload.ledger import CreditOutcome, credit_deposit
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker

from .test_workload_ledger import add_deposit, add_user, balances, statuses


@pytest.fixture
def workload_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("CRICALGO_QUEUE", settings.queue_name)
    return settings


def test_redrive_sends_dead_letters_again_and_they_are_credited_once(
    workload_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = workload_env
    add_user(settings.database_url, "frank")
    first = add_deposit(settings.database_url, "frank", "5", status="dead")
    second = add_deposit(settings.database_url, "frank", "7", status="dead")
    untouched = add_deposit(settings.database_url, "frank", "11", status="dead")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # A stale message for a dead letter neither credits it nor counts as done.
        assert credit_deposit(conn, first) is CreditOutcome.DEAD
    assert statuses(settings.database_url)[first] == "dead"

    assert main(["redrive", first, second]) == 0
    assert "re-driven: 2" in capsys.readouterr().out
    worker = DepositWorker(settings)
    worker.start(serve_metrics=False)
    try:
        wait_for(lambda: statuses(settings.database_url)[second] == "done")
        wait_for(lambda: statuses(settings.database_url)[first] == "done")
        assert main(["redrive", first]) == 0  # no longer dead: nothing to do
        assert "re-driven: 0" in capsys.readouterr().out
        assert statuses(settings.database_url)[untouched] == "dead"
        assert main(["redrive", "--all"]) == 0
        wait_for(lambda: statuses(settings.database_url)[untouched] == "done")
    finally:
        worker.stop(timeout_ms=5000)
    assert balances(settings.database_url) == {"frank": Decimal(23)}


def test_redrive_without_ids_or_all_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["redrive"])
    assert exit_info.value.code == 2
