"""What the demo measured (`DemoResult`), as pure functions of its records, and its HTML
report."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .processes import ManagedProcess
from .worker_split import StepSplit

if TYPE_CHECKING:
    from .demo import Demo
    from .demo_load import MeshLoad

# Answers the mesh itself caused (a pod it should not have routed to), as opposed to the
# application's own 500s; 0 is a request that got no HTTP answer at all.
MESH_FAILURES = (0, 502, 503, 504)


def mesh_failures(statuses: dict[int, int]) -> int:
    """Requests of a phase the mesh failed (502/503/504, or no answer)."""
    return sum(n for status, n in statuses.items() if status in MESH_FAILURES)


def fault_to_weight_zero(
    answers: Iterable[tuple[float, int]],
    samples: Sequence[dict[str, Any]],
    since: float,
    until: float,
) -> float | None:
    """Seconds from the first 500 the mesh answered in [since, until) (the faulty canary's
    first error a client saw) to the first status sample after it with canary weight 0."""
    errors = [t for t, status in answers if since <= t < until and status == 500]
    if not errors:
        return None
    first = min(errors)
    for sample in samples:
        if sample["t"] > first and sample["weight"] == 0:
            return float(sample["t"] - first)
    return None


def retried_requests(access_log: Path, since: float, until: float) -> int:
    """Requests the mesh passed to more than one pod (nginx logs `upstream_status` as
    `502, 202` then) in [since, until), from the mesh's access log."""
    if not access_log.exists():
        return 0
    count = 0
    for line in access_log.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            t = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            continue
        upstream_status = rest.split("upstream_status=", 1)[-1].split(" duration=", 1)[0]
        if since <= t < until and "," in upstream_status:
            count += 1
    return count


PROMOTE = "canary v2 (healthy)"
ROLLBACK = "canary v3 (faulty)"


@dataclass
class DemoResult:
    """What the demo observed, for its printout and for the e2e tests."""

    outcomes: list[str] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    mesh_answers: dict[str, Counter[int]] = field(default_factory=dict)
    # Requests the mesh passed to a second pod, per phase (None: no access log to read).
    mesh_retried: dict[str, int | None] = field(default_factory=dict)
    # Deposits sent again after the mesh closed a keep-alive connection unanswered, per phase.
    resent: dict[str, int] = field(default_factory=dict)
    # Why requests got no HTTP answer at all (exception names), over the whole run.
    transport_errors: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    lost: int | None = None
    doubled: int | None = None
    # From the faulty canary's first 500 at the mesh to the canary weight 0.
    fault_to_weight_zero: float | None = None
    # Tasks per track while v2's canary held each weight with a steady set of workers.
    worker_split: list[StepSplit] = field(default_factory=list)
    error: str | None = None
    report: Path | None = None
    # The operator process the demo started (it outlives the demo, like the stack).
    operator: ManagedProcess | None = None
    # The canary's configured steps and step duration, for the promote time's yardstick.
    steps: list[int] = field(default_factory=list)
    step_seconds: int = 0

    @property
    def ok(self) -> bool:
        both = self.outcomes == ["promoted", "rolledBack"]
        return both and self.error is None and self.lost == 0 and self.doubled == 0

    def measurements(self) -> list[str]:
        """The numbers the demo is for, one line each."""
        lines = []
        configured = len(self.steps) * self.step_seconds
        for name, a, b in self.phases:
            answers = self.mesh_answers.get(name, Counter())
            retried = self.mesh_retried.get(name)
            lines.append(
                f"{name}: {b - a:.0f}s; mesh answers {dict(sorted(answers.items()))}; "
                f"mesh failures (502/503/504/no answer) {mesh_failures(answers)}"
                + ("" if retried is None else f"; retried on another pod {retried}")
                + f"; sent again after a closed connection {self.resent.get(name, 0)}"
            )
        for name, a, b in self.phases:
            if name == PROMOTE:
                lines.append(
                    f"promotion took {b - a:.0f}s for {len(self.steps)} steps of "
                    f"{self.step_seconds}s (at least {configured}s configured)"
                )
        if self.fault_to_weight_zero is not None:
            lines.append(f"fault start to canary weight 0: {self.fault_to_weight_zero:.1f}s")
        for split in self.worker_split:
            lines.append(
                f"weight {split.weight:>3}%: workers stable {split.stable_workers} / canary "
                f"{split.canary_workers} took {dict(split.tasks)} tasks -> canary "
                f"{split.canary_share:.1f}% (worker share {split.expected_share:.0f}%)"
            )
        if self.transport_errors:
            lines.append(f"requests with no HTTP answer, by error: {self.transport_errors}")
        lines.append(
            f"deposits answered 202: {self.accepted}; not credited: {self.lost}; "
            f"credited twice: {self.doubled}"
        )
        return lines


def render_report(
    demo: Demo, load: MeshLoad, phases: list[tuple[str, float, float]], measured: list[str]
) -> str:
    """An HTML page: the measurements, weight and mesh error rate over time (inline SVG),
    and the timeline."""
    start = demo.started
    end = max([s["t"] for s in demo.samples] + [start + 1])
    width, height = 900, 260

    def x(t: float) -> float:
        return 40 + (t - start) / (end - start) * (width - 60)

    def y(percent: float) -> float:
        return height - 30 - percent / 100 * (height - 50)

    weight = " ".join(f"{x(s['t']):.1f},{y(s['weight']):.1f}" for s in demo.samples)
    errors = []
    second = int(start)
    while second < end:
        answered = load.statuses(second, second + 5)
        total = sum(answered.values())
        if total:
            bad = sum(n for status, n in answered.items() if status >= 500 or status == 0)
            errors.append(f"{x(second + 2.5):.1f},{y(100 * bad / total):.1f}")
        second += 5
    rows = "".join(
        f"<tr><td>+{t - start:.0f}s</td><td>{html.escape(m)}</td></tr>" for t, m in demo.events
    )
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in measured)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>CricAlgo canary demo</title></head><body style="font-family:sans-serif">
<h1>CricAlgo canary demo</h1><ul>{summary}</ul>
<svg width="{width}" height="{height}" style="border:1px solid #ccc">
<text x="45" y="15">canary weight % (blue), mesh 5xx % per 5 s (red)</text>
<line x1="40" y1="{y(0)}" x2="{width - 20}" y2="{y(0)}" stroke="#999"/>
<line x1="40" y1="{y(100)}" x2="{width - 20}" y2="{y(100)}" stroke="#eee"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{weight}"/>
<polyline fill="none" stroke="#d1242f" stroke-width="1.5" points="{" ".join(errors)}"/>
</svg><h2>Timeline</h2><table>{rows}</table></body></html>
"""
