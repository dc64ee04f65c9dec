"""The demo report's plots (plotly), as pure functions of what the demo recorded.

Three figures on one time axis (UTC): the canary weight with its step, promote and rollback
markers; the error rate and p99 latency of each track, as the operator's built-in templates
read them from Prometheus; deposits answered 202 at the mesh and credited in the ledger.
The page carries plotly.js inline, so it opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

TRACKS = ("stable", "canary")
COLOURS = {"stable": "#1f6feb", "canary": "#d4a72c"}
# Marker kind -> (symbol, colour) on the weight plot.
MARKERS = {
    "step": ("triangle-up", "#1f6feb"),
    "promote": ("star", "#1a7f37"),
    "rollback": ("x", "#d1242f"),
}


@dataclass
class ReportData:
    """What the demo recorded. Each sample: `t` (epoch seconds), `phase`, `weight`, `step`,
    `tracks` ({track: {"errorRate": ratio or None, "latencyP99": seconds or None}}) and
    `credited` (ledger rows so far, or None)."""

    started: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (t, HTTP status)
    events: list[tuple[float, str]] = field(default_factory=list)
    measurements: list[str] = field(default_factory=list)


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def rollout_markers(samples: Sequence[dict[str, Any]]) -> list[tuple[float, int, str, str]]:
    """(t, weight, kind, label) where a step began, a promotion began or a rollback
    happened, from consecutive samples."""
    out: list[tuple[float, int, str, str]] = []
    previous: dict[str, Any] = {}
    for sample in samples:
        phase, step, weight = sample.get("phase"), str(sample.get("step")), sample["weight"]
        new_step = step != str(previous.get("step")) and step.isdigit()
        if new_step and phase in ("Progressing", "Paused"):
            out.append((sample["t"], weight, "step", f"step {int(step) + 1}: {weight}%"))
        if phase != previous.get("phase"):
            if phase == "Promoting":
                out.append((sample["t"], weight, "promote", "promote"))
            elif phase in ("RollingBack", "RolledBack") and previous.get("phase") not in (
                "RollingBack",
                "RolledBack",
            ):
                out.append((sample["t"], weight, "rollback", "rollback"))
        previous = sample
    return out


def weight_figure(data: ReportData) -> go.Figure:
    times = [_time(s["t"]) for s in data.samples]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=times,
            y=[s["weight"] for s in data.samples],
            name="canary weight",
            mode="lines",
            line={"shape": "hv", "color": COLOURS["canary"], "width": 2},
        )
    )
    markers = rollout_markers(data.samples)
    for kind, (symbol, colour) in MARKERS.items():
        mine = [m for m in markers if m[2] == kind]
        if not mine:
            continue
        figure.add_trace(
            go.Scatter(
                x=[_time(m[0]) for m in mine],
                y=[m[1] for m in mine],
                name=kind,
                mode="markers+text",
                text=[m[3] for m in mine],
                textposition="top center",
                marker={"symbol": symbol, "size": 12, "color": colour},
            )
        )
    figure.update_layout(title="Canary weight", xaxis_title="time (UTC)")
    figure.update_yaxes(title_text="weight (%)", range=[-5, 110])
    return figure


def slo_figure(data: ReportData) -> go.Figure:
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    times = [_time(s["t"]) for s in data.samples]
    for track in TRACKS:
        readings = [(s.get("tracks") or {}).get(track) or {} for s in data.samples]
        rate = [None if r.get("errorRate") is None else 100 * r["errorRate"] for r in readings]
        figure.add_trace(
            go.Scatter(
                x=times,
                y=rate,
                name=f"error rate {track}",
                mode="lines",
                line={"color": COLOURS[track]},
            ),
            secondary_y=False,
        )
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[r.get("latencyP99") for r in readings],
                name=f"p99 {track}",
                mode="lines",
                line={"color": COLOURS[track], "dash": "dot"},
            ),
            secondary_y=True,
        )
    figure.update_layout(title="Error rate and p99 latency per track", xaxis_title="time (UTC)")
    figure.update_yaxes(title_text="error rate (%)", secondary_y=False)
    figure.update_yaxes(title_text="p99 latency (s)", secondary_y=True)
    return figure


def deposits_figure(data: ReportData) -> go.Figure:
    answered = sorted(t for t, status in data.answers if status == 202)
    credited = [(s["t"], s["credited"]) for s in data.samples if s.get("credited") is not None]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[_time(t) for t in answered],
            y=list(range(1, len(answered) + 1)),
            name="answered 202",
            mode="lines",
            line={"color": COLOURS["stable"]},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[_time(t) for t, _ in credited],
            y=[n for _, n in credited],
            name="credited",
            mode="lines",
            line={"color": "#1a7f37"},
        )
    )
    figure.update_layout(title="Deposits answered and credited", xaxis_title="time (UTC)")
    figure.update_yaxes(title_text="deposits (cumulative)")
    return figure


def render_html(data: ReportData) -> str:
    """The whole page: measurements, the three plots, the timeline."""
    figures = [
        ("weight", weight_figure(data)),
        ("slo", slo_figure(data)),
        ("deposits", deposits_figure(data)),
    ]
    plots = "\n".join(
        figure.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False, div_id=name)
        for i, (name, figure) in enumerate(figures)
    )
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in data.measurements)
    rows = "".join(
        f"<tr><td>+{t - data.started:.0f}s</td><td>{html.escape(message)}</td></tr>"
        for t, message in data.events
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>CricAlgo canary demo</title></head><body style="font-family:sans-serif">
<h1>CricAlgo canary demo</h1><ul>{summary}</ul>
{plots}
<h2>Timeline</h2><table>{rows}</table></body></html>
"""
