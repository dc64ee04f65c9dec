"""The demo report, rendered by headless Chromium: its three plots are drawn, with time axes,
legends and the rollout's markers.

Chromium is a Debian package the setup installs (scripts/install-system-packages.sh); without
it this test fails with that instruction rather than skipping.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from cricalgo_localstack.demo_plots import ReportData, render_html, rollout_markers
from cricalgo_localstack.services import _find_binary

T0 = 1_780_000_000.0  # a fixed epoch second


def sample(t: float, phase: str, weight: int, step: int, **extra: Any) -> dict[str, Any]:
    return {"t": T0 + t, "phase": phase, "weight": weight, "step": str(step), **extra}


def timeline() -> list[dict[str, Any]]:
    """v2 walks 25/50/100 and is promoted; v3 fails at 25 % and is rolled back."""
    out = []
    plan = [
        (0, "Ready", 0, -1),
        (10, "Progressing", 0, -1),
        (12, "Progressing", 25, 0),
        (42, "Progressing", 50, 1),
        (72, "Progressing", 100, 2),
        (102, "Promoting", 100, 2),
        (110, "Ready", 0, -1),
        (120, "Progressing", 25, 0),
        (140, "RolledBack", 0, 0),
        (150, "RolledBack", 0, 0),
    ]
    for i, (t, phase, weight, step) in enumerate(plan):
        faulty = t >= 120 and phase == "Progressing"
        tracks = {
            "stable": {"errorRate": 0.0, "latencyP99": 0.05},
            "canary": {"errorRate": 0.3 if faulty else 0.001, "latencyP99": 0.08},
        }
        out.append(sample(t, phase, weight, step, tracks=tracks, credited=25 * i))
    return out


def report_data() -> ReportData:
    answers = [(T0 + t / 2, 500 if 120 <= t / 2 < 140 and t % 10 == 0 else 202) for t in range(300)]
    return ReportData(
        started=T0,
        samples=timeline(),
        answers=answers,
        events=[(T0 + 10, "image -> v2"), (T0 + 120, "image -> v3 with error rate 0.3")],
        measurements=["deposits answered 202: 270; not credited: 0; credited twice: 0"],
    )


def test_markers_at_each_step_the_promotion_and_the_rollback() -> None:
    markers = [(m[0] - T0, m[2], m[3]) for m in rollout_markers(timeline())]
    assert markers == [
        (12, "step", "step 1: 25%"),
        (42, "step", "step 2: 50%"),
        (72, "step", "step 3: 100%"),
        (102, "promote", "promote"),
        (120, "step", "step 1: 25%"),
        (140, "rollback", "rollback"),
    ]


def test_chromium_draws_the_three_plots(tmp_path: Path) -> None:
    chromium = _find_binary("chromium")
    page = tmp_path / "report.html"
    page.write_text(render_html(report_data()))
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # as root, in a container without user namespaces
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # Each plot became an SVG drawing (plotly's main-svg layers), not just a script.
    for plot in ("weight", "slo", "deposits"):
        found = re.search(f'<div id="{plot}"[^>]*class="[^"]*js-plotly-plot', dom)
        assert found, f"plot {plot} was not drawn"
    assert dom.count('class="main-svg"') >= 6
    legends = set(re.findall(r'class="legendtext"[^>]*>([^<]+)<', dom))
    assert legends >= {
        "canary weight",
        "step",
        "promote",
        "rollback",
        "error rate stable",
        "error rate canary",
        "p99 stable",
        "p99 canary",
        "answered 202",
        "credited",
    }, legends
    titles = set(re.findall(r'class="(?:g-)?[xy]2?title"[^>]*>.*?>([^<]+)<', dom))
    titles |= set(re.findall(r'class="[xy]2?title"[^>]*>([^<]+)<', dom))
    assert {"time (UTC)", "weight (%)", "error rate (%)", "p99 latency (s)"} <= titles, titles
    # A time axis: tick labels are clock times of the run, not sample indexes.
    assert re.search(r'class="xtick".*?>\d{2}:\d{2}(:\d{2})?<', dom)
    # The markers' labels are drawn at their points.
    assert "step 3: 100%" in dom
    # The summary is text, the timeline rows are there.
    assert "deposits answered 202: 270" in dom
    assert "image -&gt; v3 with error rate 0.3" in dom
