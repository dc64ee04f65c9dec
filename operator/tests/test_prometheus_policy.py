"""Which Prometheus a CR's analysis may query under the operator's flags (pure)."""

from __future__ import annotations

import pytest
from cricalgo_operator.canary.prometheus_policy import PrometheusPolicy, choose_prometheus_url
from cricalgo_operator.config import parse_config

OPERATOR = "http://prometheus.monitoring.svc:9090"


def test_by_default_a_cr_url_wins_and_none_falls_back_to_the_operators() -> None:
    assert choose_prometheus_url(None, OPERATOR).url == OPERATOR
    assert choose_prometheus_url("http://mine:9090", OPERATOR).url == "http://mine:9090"


def test_forbidden_override_uses_the_operators_url_and_says_so() -> None:
    choice = choose_prometheus_url("http://10.0.0.1:80", OPERATOR, allow_cr_url=False)
    assert choice.url == OPERATOR
    assert choice.refused is not None
    assert "--no-cr-prometheus-url" in choice.refused


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://prom.monitoring.svc:9090", True),
        ("http://prom.monitoring.svc:9090/", True),
        ("http://prom.monitoring.svc:9090/tenant-a", True),
        ("http://PROM.monitoring.svc:9090", True),
        ("http://prom.monitoring.svc:9091", False),
        ("http://prom.monitoring.svc:90901", False),
        ("http://prom.monitoring.svc:9090.evil.example", False),
        ("http://prom.monitoring.svc:9090@evil.example", False),
        ("https://prom.monitoring.svc:9090", False),
        ("http://kubernetes.default.svc:443", False),
        ("http://169.254.169.254/latest/meta-data", False),
    ],
)
def test_allowlist_matches_scheme_host_port_and_a_path_boundary(url: str, allowed: bool) -> None:
    prefixes = ["http://prom.monitoring.svc:9090"]
    choice = choose_prometheus_url(url, OPERATOR, allowed_prefixes=prefixes)
    assert (choice.url == url) is allowed
    if not allowed:
        assert choice.url is None
        assert "allowlist" in (choice.refused or "")


def test_allowlist_with_a_path_prefix() -> None:
    prefixes = ["http://thanos:9090/tenant-a/"]
    assert choose_prometheus_url("http://thanos:9090/tenant-a", None, allowed_prefixes=prefixes).url
    assert not choose_prometheus_url(
        "http://thanos:9090/tenant-ab", None, allowed_prefixes=prefixes
    ).url


def test_policy_from_the_operators_flags() -> None:
    config = parse_config(
        [
            "--prometheus-url",
            OPERATOR,
            "--prometheus-allowed-url",
            "http://a:9090",
            "--prometheus-allowed-url",
            "http://b:9090/x",
            "--no-cr-prometheus-url",
        ],
        environ={},
    )
    policy = PrometheusPolicy.of_config(config)
    assert policy == PrometheusPolicy(OPERATOR, False, ("http://a:9090", "http://b:9090/x"))
    env = parse_config(
        [], environ={"CRICALGO_PROMETHEUS_ALLOWED_URLS": "http://a:9090, http://b:9090"}
    )
    assert env.prometheus_allowed_urls == ("http://a:9090", "http://b:9090")
    assert env.cr_prometheus_url is True
