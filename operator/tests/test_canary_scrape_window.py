"""The analysis window checked against the scrape interval: the verdict (pure) and the
targets' intervals as a real Prometheus reports them."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import pytest
from cricalgo_operator.canary.prometheus import PrometheusClient
from cricalgo_operator.canary.scrape_window import (
    CONDITION,
    target_intervals,
    window_patch,
    window_unchecked,
    window_verdict,
)
from cricalgo_operator.conditions import set_condition
from cricalgo_operator.model import Cad
from prometheus_client import CollectorRegistry, start_http_server

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


def cad(generation: int = 4, conditions: list[dict[str, Any]] | None = None) -> Cad:
    return Cad.from_body(
        {
            "metadata": {"name": "pay", "namespace": "shop", "uid": "u", "generation": generation},
            "spec": {"image": "i:1", "database": {"secretRef": {"name": "d"}},
                     "redis": {"secretRef": {"name": "r"}}},
            "status": {"conditions": conditions or []},
        }
    )  # fmt: skip


def test_a_window_of_one_scrape_is_too_short() -> None:
    # The defaults on a Prometheus with its default 1m scrape: one sample per window.
    status, reason, message = window_verdict(60, [60.0])
    assert (status, reason) == (False, "ShorterThanTwoScrapes")
    assert "analysisInterval 1m is shorter than 2 scrapes of 1m" in message
    assert "at least 2m" in message
    assert window_verdict(59, [30.0])[0] is False
    assert window_verdict(60, [30.0])[:2] == (True, "AtLeastTwoScrapes")
    # The slowest target decides: its series have the fewest samples.
    assert window_verdict(60, [15.0, 45.0])[0] is False
    assert window_verdict(60, [])[:2] == (None, "NoTargets")


def test_the_check_runs_once_per_generation_and_warns_only_when_short() -> None:
    assert window_unchecked(cad())
    patch, warning = window_patch(cad(), window_verdict(60, [60.0]), NOW)
    checked = cad(conditions=patch["conditions"])
    assert not window_unchecked(checked)
    assert warning is not None
    assert warning.type == "Warning"
    assert warning.reason == "AnalysisWindowTooShort"
    (condition,) = patch["conditions"]
    assert (condition["type"], condition["status"]) == (CONDITION, "False")
    assert condition["observedGeneration"] == 4
    # A new generation (analysisInterval edited) is checked again; a fine window is quiet.
    assert window_unchecked(cad(generation=5, conditions=patch["conditions"]))
    fine, quiet = window_patch(cad(generation=5), window_verdict(120, [60.0]), NOW)
    assert quiet is None
    assert fine["conditions"][0]["status"] == "True"
    unknown = set_condition([], CONDITION, None, "NoTargets", "m", NOW, 4)
    assert window_unchecked(cad(conditions=unknown))


def test_only_the_crs_own_targets_count() -> None:
    targets = {
        "activeTargets": [
            {"labels": {"namespace": "shop", "app": "pay"}, "scrapeInterval": "30s"},
            {"labels": {"namespace": "shop", "app": "pay"}, "scrapeInterval": "1m"},
            {"labels": {"namespace": "shop", "app": "other"}, "scrapeInterval": "5m"},
            {"labels": {"namespace": "else", "app": "pay"}, "scrapeInterval": "5m"},
            {"labels": {"namespace": "shop", "app": "pay"}, "scrapeInterval": "bogus"},
        ]
    }
    assert target_intervals(targets, "shop", "pay") == [30.0, 60.0]
    assert target_intervals({}, "shop", "pay") == []


@pytest.mark.slow
def test_scrape_interval_as_prometheus_reports_it(prometheus_server: Any) -> None:
    """The fixture's Prometheus scrapes every second: a 1 s window is one scrape, 2 s two."""
    server, thread = start_http_server(0, "127.0.0.1", registry=CollectorRegistry())
    job = "scrape-window-test"
    labels = {"namespace": "scrape-window", "app": "pay", "track": "canary", "version": "v2"}
    prometheus_server.set_targets(job, [f"127.0.0.1:{server.server_port}"], labels)

    async def intervals() -> list[float]:
        async with PrometheusClient(prometheus_server.url, timeout=5, retries=1) as client:
            return target_intervals(await client.targets(), "scrape-window", "pay")

    try:
        deadline = time.monotonic() + 30
        found = asyncio.run(intervals())
        while not found and time.monotonic() < deadline:
            time.sleep(0.5)  # file discovery refreshes every second
            found = asyncio.run(intervals())
        assert found == [1.0]
        assert window_verdict(1.0, found)[0] is False
        assert window_verdict(2.0, found)[0] is True
    finally:
        prometheus_server.set_targets(job, [])
        server.shutdown()
        server.server_close()
        thread.join()
