"""Redis, PostgreSQL, Prometheus and nginx, as the fixtures start them, answer real requests."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import psycopg
import pytest
import redis
from cricalgo_localstack.services import NginxServer, PostgresServer, PrometheusServer, RedisServer


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def test_redis_round_trip_and_restart_loses_data(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("cricalgo:probe", "1")
    assert client.get("cricalgo:probe") == b"1"
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    assert client.get("cricalgo:probe") is None
    assert client.ping()


def test_postgres_database_survives_a_restart(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database("localstack_probe")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (n int)")
        conn.execute("INSERT INTO probe VALUES (42)")
    postgres_server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    postgres_server.start()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT n FROM probe").fetchone() == (42,)


def test_prometheus_scrapes_a_target_it_is_given(prometheus_server: PrometheusServer) -> None:
    own = f"127.0.0.1:{prometheus_server.port}"
    prometheus_server.set_targets("selfscrape", [own], {"track": "stable"})
    deadline = time.monotonic() + 30
    result: list[dict[str, object]] = []
    while time.monotonic() < deadline and not result:
        query = urllib.parse.quote('up{job="selfscrape"}')
        body = json.loads(_get(f"{prometheus_server.url}/api/v1/query?query={query}"))
        result = body["data"]["result"]
        time.sleep(0.5)
    assert result, "Prometheus never scraped the target it was given"
    assert result[0]["metric"]["track"] == "stable"  # type: ignore[index]
    assert result[0]["value"][1] == "1"  # type: ignore[index]


def test_nginx_serves_the_config_it_is_given_and_refuses_a_bad_one(
    nginx_server: NginxServer,
) -> None:
    nginx_server.apply_http_config(
        f"server {{ listen 127.0.0.1:{nginx_server.port};"
        ' location / { return 200 "cricalgo\\n"; } }'
    )
    deadline = time.monotonic() + 10
    body = b""
    while time.monotonic() < deadline and body != b"cricalgo\n":
        try:
            body = _get(nginx_server.url)
        except OSError:
            time.sleep(0.1)
    assert body == b"cricalgo\n"
    with pytest.raises(ValueError, match="nginx rejected the config"):
        nginx_server.apply_http_config("this is not nginx;")
    assert _get(nginx_server.url) == b"cricalgo\n"
