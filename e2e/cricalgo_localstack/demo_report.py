"""What the demo measured (`DemoResult`), as pure functions of its records, and its HTML
report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .demo_plots import ReportData, render_html
from .processes import ManagedProcess
from .worker_split import StepSplit

if TYPE_CHECKING:
    from .demo import Demo
    from .demo_load import MeshLoad

# Answers the mesh itself caused (a pod it should not have routed to), as opposed to the
# application's own 500s; 0 is a request that got no HTTP answer at all.
MESH_FAILURES = (0, 502, 503, 504)


def counts(found: Mapping[Any, int], unit: str = "") -> str:
    """`202 x5000, 500 x12` in key order: counts for a person, not a Python dict."""
    if not found:
        return "none"
    return ", ".join(f"{key}{unit} x{n}" for key, n in sorted(found.items(), key=str))


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
                f"{name}: {b - a:.0f}s; mesh answers {counts(answers)}; "
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
                f"{split.canary_workers} took {counts(split.tasks)} tasks -> canary "
                f"{split.canary_share:.1f}% (worker share {split.expected_share:.0f}%)"
            )
        if self.transport_errors:
            lines.append(f"requests with no HTTP answer, by error: {counts(self.transport_errors)}")
        lines.append(
            f"deposits answered 202: {self.accepted}; not credited: {self.lost}; "
            f"credited twice: {self.doubled}"
        )
        return lines


def render_report(
    demo: Demo, load: MeshLoad, phases: list[tuple[str, float, float]], measured: list[str]
) -> str:
    """An HTML page: the measurements, plots of weight, per-track SLOs and deposits over
    time (demo_plots.py), and the timeline."""
    data = ReportData(demo.started, demo.samples, list(load.answers), demo.events, measured)
    return render_html(data)
