"""e2e/smoke_and_checks.sh against a real webhook and worker on real PostgreSQL and Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cricalgo_localstack.deposits import new_secret
from cricalgo_localstack.processes import free_port
from cricalgo_localstack.services import PostgresServer, RedisServer
from cricalgo_localstack.workload_processes import WorkloadProcess

SCRIPT = Path(__file__).resolve().parents[1] / "smoke_and_checks.sh"
API_TOKEN = "smoke-token-0123456789"


@pytest.fixture(scope="module")
def workload(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("smoke-logs")
    port = free_port()
    secret = new_secret()
    env = {
        "DATABASE_URL": postgres_server.create_database("smoke"),
        "REDIS_URL": redis_server.url,
        "CRICALGO_WEBHOOK_SECRET": secret,
        "CRICALGO_API_TOKEN": API_TOKEN,
        "CRICALGO_HOST": "127.0.0.1",
        "CRICALGO_PORT": str(port),
        "CRICALGO_METRICS_PORT": str(free_port()),
        "CRICALGO_QUEUE": "smoke-deposits",
    }
    migrate = WorkloadProcess("migrate", env, str(logs / "migrate.log")).start()
    assert migrate.wait() == 0, (logs / "migrate.log").read_text()
    webhook = WorkloadProcess("webhook", env, str(logs / "webhook.log")).start()
    worker = WorkloadProcess("worker", env, str(logs / "worker.log")).start()
    try:
        webhook.wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}", secret
    finally:
        webhook.stop()
        worker.stop()


def _smoke(
    base_url: str, secret: str, artifacts: Path, token: str = API_TOKEN
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "BASE_URL": base_url,
            "WEBHOOK_SECRET": secret,
            "API_TOKEN": token,
            "ARTIFACTS_DIR": str(artifacts),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_smoke_script_passes_against_a_healthy_workload(
    workload: tuple[str, str], tmp_path: Path
) -> None:
    base_url, secret = workload
    result = _smoke(base_url, secret, tmp_path / "artifacts")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed, 0 failed" in result.stdout
    assert "the worker credited" in result.stdout
    saved = {path.name for path in (tmp_path / "artifacts").iterdir()}
    assert {"summary.txt", "deposit.body", "transaction.body", "metrics.body"} <= saved


def test_smoke_script_fails_loudly_on_a_wrong_token(
    workload: tuple[str, str], tmp_path: Path
) -> None:
    base_url, secret = workload
    result = _smoke(base_url, secret, tmp_path / "artifacts", token="wrong")
    assert result.returncode == 1
    assert "FAIL POST /api/v1/users answered 401" in result.stderr


def test_smoke_script_fails_when_nothing_listens(tmp_path: Path) -> None:
    result = _smoke(f"http://127.0.0.1:{free_port()}", new_secret(), tmp_path / "artifacts")
    assert result.returncode == 1
    assert "FAIL GET /healthz answered 000" in result.stderr
