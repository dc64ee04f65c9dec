"""The operator's settings: flags over environment over defaults, and clear errors."""

from __future__ import annotations

import pytest
from cricalgo_operator.config import ConfigError, OperatorConfig, parse_config


def test_config_flags_win_over_environment() -> None:
    env = {"CRICALGO_NAMESPACES": "a, b", "CRICALGO_METRICS_PORT": "9000", "KUBECONFIG": "/k"}
    config = parse_config([], env)
    assert config.namespaces == ("a", "b")
    assert not config.clusterwide
    assert config.metrics_port == 9000
    assert config.kubeconfig == "/k"
    config = parse_config(["--namespace", "c", "--metrics-port", "0", "--liveness", ""], env)
    assert config.namespaces == ("c",)
    assert config.metrics_port == 0
    assert config.liveness is None
    assert parse_config([], {}).clusterwide
    with pytest.raises(ConfigError, match="metrics port must be an integer"):
        parse_config(["--metrics-port", "eighty"], {})


def test_analysis_is_on_unless_switched_off_by_flag_or_environment() -> None:
    assert parse_config([], {}).analysis is True
    assert parse_config(["--no-analysis"], {}).analysis is False
    assert parse_config([], {"CRICALGO_ANALYSIS": "false"}).analysis is False
    with pytest.raises(ConfigError, match="CRICALGO_ANALYSIS must be true or false"):
        parse_config([], {"CRICALGO_ANALYSIS": "maybe"})


def test_defaults_listen_on_every_address() -> None:
    config = parse_config([], {})
    assert config == OperatorConfig()
    assert config.bind_host == "0.0.0.0"
    assert config.liveness == "http://0.0.0.0:8081/healthz"
    assert config.prometheus_url is None


def test_bind_host_moves_the_liveness_endpoint_with_it() -> None:
    # What the chart does: CRICALGO_BIND_HOST comes from the pod IP (downward API).
    config = parse_config([], {"CRICALGO_BIND_HOST": "127.31.7.12"})
    assert config.bind_host == "127.31.7.12"
    assert config.liveness == "http://127.31.7.12:8081/healthz"
    flagged = parse_config(["--bind-host", "10.0.0.5"], {"CRICALGO_BIND_HOST": "127.31.7.12"})
    assert flagged.bind_host == "10.0.0.5"
    assert flagged.liveness == "http://10.0.0.5:8081/healthz"
    assert parse_config(["--bind-host", "fd00::7"], {}).liveness == "http://[fd00::7]:8081/healthz"
    assert parse_config(["--bind-host", "localhost"], {}).bind_host == "localhost"


def test_an_explicit_liveness_url_keeps_its_own_host() -> None:
    config = parse_config(
        ["--bind-host", "10.0.0.5"], {"CRICALGO_LIVENESS": "http://127.0.0.1:9999/healthz"}
    )
    assert config.bind_host == "10.0.0.5"
    assert config.liveness == "http://127.0.0.1:9999/healthz"
    assert parse_config(["--bind-host", "10.0.0.5", "--liveness", ""], {}).liveness is None


def test_a_liveness_url_without_a_host_listens_on_the_bind_host() -> None:
    # The chart passes `http://:PORT/healthz` and the pod IP as the bind host.
    config = parse_config(["--liveness", "http://:9000/healthz"], {"CRICALGO_BIND_HOST": "fd00::7"})
    assert config.liveness == "http://[fd00::7]:9000/healthz"
    config = parse_config(["--liveness", "http://:9000/live"], {"CRICALGO_BIND_HOST": "10.1.2.3"})
    assert config.liveness == "http://10.1.2.3:9000/live"


@pytest.mark.parametrize("bad", ["https://:8081/healthz", "8081", "http://:port/healthz"])
def test_a_liveness_endpoint_kopf_cannot_serve_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="liveness URL"):
        parse_config(["--liveness", bad], {})


@pytest.mark.parametrize("bad", ["", "http://10.0.0.5", "10.0.0.5:8080", "-bad-", "a b"])
def test_a_bind_host_that_is_no_address_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="bind host"):
        parse_config([], {"CRICALGO_BIND_HOST": bad})


def test_prometheus_url_from_environment_or_flag() -> None:
    env = {"CRICALGO_PROMETHEUS_URL": "http://prometheus.monitoring.svc:9090/"}
    assert parse_config([], env).prometheus_url == "http://prometheus.monitoring.svc:9090"
    flagged = parse_config(["--prometheus-url", "https://prom.example.com/api/prom"], env)
    assert flagged.prometheus_url == "https://prom.example.com/api/prom"
    assert parse_config(["--prometheus-url", ""], env).prometheus_url is None


@pytest.mark.parametrize(
    "bad", ["prometheus:9090", "ftp://prom:9090", "http://", "http://prom:ninety"]
)
def test_a_prometheus_url_that_is_no_http_url_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="Prometheus URL"):
        parse_config(["--prometheus-url", bad], {})


def test_analysis_interval_floor_and_peering_settings() -> None:
    assert parse_config([], {}).min_analysis_interval == 1.0
    assert parse_config(["--min-analysis-interval", "30s"], {}).min_analysis_interval == 30.0
    env = {"CRICALGO_MIN_ANALYSIS_INTERVAL": "1m"}
    assert parse_config([], env).min_analysis_interval == 60.0
    with pytest.raises(ConfigError, match="at least 1s"):
        parse_config(["--min-analysis-interval", "100ms"], {})
    with pytest.raises(ConfigError, match="minimum analysis interval"):
        parse_config(["--min-analysis-interval", "soon"], {})
    config = parse_config(["--peering", "p", "--peering-priority", "7", "--peering-lifetime", "9"])
    assert (config.peering, config.peering_priority, config.peering_lifetime) == ("p", 7, 9)
    assert parse_config([], {}).peering_priority is None  # each replica draws its own
    with pytest.raises(ConfigError, match="peering lifetime must be >= 5"):
        parse_config(["--peering-lifetime", "1"], {})
