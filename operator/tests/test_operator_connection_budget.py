"""The PostgreSQL connection budget of a CR with the defaults: every pod the HPAs may run
during a canary (both tracks, plus a rolling update's surge) holding its whole pool stays
under PostgreSQL's default `max_connections` (see docs/workload.md, "Connection budget")."""

from __future__ import annotations

import math
from typing import Any

import pytest
from cricalgo_operator.model import with_defaults
from cricalgo_operator.render_scaling import track_bounds

POSTGRES_MAX_CONNECTIONS = 100  # PostgreSQL's default
SUPERUSER_RESERVED = 3  # superuser_reserved_connections' default
MIGRATE_JOB = 1  # `cricalgo-workload migrate` holds one connection
SURGE = 0.25  # the Deployments' rollingUpdate.maxSurge


def worst_case_pods(spec: dict[str, Any]) -> int:
    """The most pods both components may run at once over every canary weight, with a
    rolling update's surge on every track."""
    worst = 0
    for weight in range(0, 101):
        total = 0
        for component in ("app", "worker"):
            bounds = track_bounds(spec, component, weight, weight > 0, False)
            for track in bounds.values():
                if track is not None:
                    total += track.max + math.ceil(track.max * SURGE)
        worst = max(worst, total)
    return worst


@pytest.mark.parametrize("provider", ["none", "istio", "nginx"])
def test_default_pools_at_the_hpa_maxima_fit_postgres_defaults(provider: str) -> None:
    spec = with_defaults(
        {
            "image": "reg/app:v1",
            "database": {"secretRef": {"name": "db"}},
            "redis": {"secretRef": {"name": "redis"}},
            "traffic": {"provider": provider, "hosts": ["pay.example.com"]},
        }
    )
    per_pod = spec["database"]["poolSize"] + spec["database"]["maxOverflow"]
    budget = worst_case_pods(spec) * per_pod + MIGRATE_JOB

    assert budget <= POSTGRES_MAX_CONNECTIONS - SUPERUSER_RESERVED, budget
