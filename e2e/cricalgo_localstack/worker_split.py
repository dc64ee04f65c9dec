"""Which track's workers take the deposit tasks, step by step of a canary.

The workers of both tracks are competing consumers of one Redis queue (the operator splits
their replicas by the canary weight; no router stands in front of a queue). So the share of
tasks a track takes follows its share of ready workers. To measure it, the demo samples, with
the canary weight, each ready worker pod's `cricalgo_tasks_total` (summed over outcomes)
from its own metrics port; `split_by_step` attributes the tasks done between two samples to
the weight and worker counts of both, when neither changed in between (a pod starting or
stopping makes the interval ambiguous, so it is left out).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TASKS_METRIC = "cricalgo_tasks_total"


@dataclass(frozen=True)
class WorkerSample:
    """At time `t`: the canary weight and, per ready worker pod, (track, tasks taken)."""

    t: float
    weight: int
    pods: Mapping[str, tuple[str, float]]

    def counts(self) -> tuple[int, int]:
        """(stable, canary) ready workers."""
        tracks = Counter(track for track, _ in self.pods.values())
        return tracks["stable"], tracks["canary"]


@dataclass(frozen=True)
class StepSplit:
    """Tasks per track taken while the weight and the ready workers stayed as given."""

    weight: int
    stable_workers: int
    canary_workers: int
    tasks: Counter[str]

    @property
    def total(self) -> int:
        return sum(self.tasks.values())

    @property
    def canary_share(self) -> float:
        """Percent of the tasks the canary's workers took."""
        return 100.0 * self.tasks["canary"] / self.total if self.total else 0.0

    @property
    def expected_share(self) -> float:
        """Percent of the ready workers that are canary workers."""
        return 100.0 * self.canary_workers / (self.stable_workers + self.canary_workers)


def split_by_step(samples: Sequence[WorkerSample]) -> list[StepSplit]:
    """Tasks per track for each (weight, stable workers, canary workers) seen, from the
    intervals between consecutive samples in which nothing of that changed."""
    totals: dict[tuple[int, int, int], Counter[str]] = {}
    for before, after in itertools.pairwise(samples):
        if before.weight != after.weight or set(before.pods) != set(after.pods):
            continue
        key = (after.weight, *after.counts())
        if key[1] == 0 and key[2] == 0:
            continue
        done = totals.setdefault(key, Counter())
        for pod, (track, tasks) in after.pods.items():
            # A counter that went down is a restarted process: the interval is unknown.
            done[track] += int(max(tasks - before.pods[pod][1], 0))
    return [
        StepSplit(weight, stable, canary, tasks)
        for (weight, stable, canary), tasks in sorted(totals.items())
    ]


def tasks_taken(metrics_text: str) -> float:
    """The sum of `cricalgo_tasks_total` over its labels in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == TASKS_METRIC:
                total += sample.value
    return total


def metrics_port(pod: Mapping[str, Any]) -> int | None:
    """The port the pod's Prometheus annotation (else its `metrics` port) names."""
    port = (pod["metadata"].get("annotations") or {}).get("prometheus.io/port")
    if port:
        return int(port)
    for container in pod["spec"].get("containers", []):
        for entry in container.get("ports") or []:
            if entry.get("name") == "metrics":
                return int(entry["containerPort"])
    return None
