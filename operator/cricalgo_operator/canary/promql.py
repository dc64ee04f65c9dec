"""PromQL templates: the built-in `workload` and `istio` sets, and variable substitution.

Templates use `{namespace} {name} {track} {version} {interval}` (and `{workload}`, the
Deployment a track's app runs as, for mesh metrics). Only those exact placeholders are
replaced, so PromQL's own braces (`metric{label="x"}`) are left alone.

The workload set queries the names in docs/metrics.md. Series are selected by the labels
Prometheus' pod discovery adds (`namespace`, `app` = the CR name, `track`, `version`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cricalgo_operator.canary.model import CANARY, REQUESTS, TASKS

_VARIABLE = re.compile(r"\{(namespace|name|track|version|interval|workload)\}")

# Probes and scrapes are not user traffic: they would dilute the error ratio.
_ROUTES = 'route!~"/healthz|/readyz|/metrics"'
_SEL = 'namespace="{namespace}", app="{name}", track="{track}", version="{version}"'
_HTTP = f"{_SEL}, {_ROUTES}"
# A missing 5xx series means no errors, not no data: `or vector(0)` keeps the ratio defined
# whenever the denominator (all requests) exists.
_WORKLOAD: Mapping[str, str] = {
    REQUESTS: f"sum(increase(cricalgo_http_requests_total{{{_HTTP}}}[{{interval}}]))",
    # Counts for the sequential test (the failures of errorRate / taskFailureRate).
    "errors": (
        f'sum(increase(cricalgo_http_requests_total{{{_HTTP}, status=~"5.."}}[{{interval}}]))'
        " or vector(0)"
    ),
    "errorRate": (
        f'(sum(rate(cricalgo_http_requests_total{{{_HTTP}, status=~"5.."}}[{{interval}}]))'
        " or vector(0))"
        f" / sum(rate(cricalgo_http_requests_total{{{_HTTP}}}[{{interval}}]))"
    ),
    "latencyP95": (
        "histogram_quantile(0.95, sum by (le) ("
        f"rate(cricalgo_http_request_duration_seconds_bucket{{{_HTTP}}}[{{interval}}])))"
    ),
    "latencyP99": (
        "histogram_quantile(0.99, sum by (le) ("
        f"rate(cricalgo_http_request_duration_seconds_bucket{{{_HTTP}}}[{{interval}}])))"
    ),
    TASKS: f"sum(increase(cricalgo_tasks_total{{{_SEL}}}[{{interval}}]))",
    "failedTasks": (
        f'sum(increase(cricalgo_tasks_total{{{_SEL}, outcome=~"failure|retry|dead_letter"}}'
        "[{interval}])) or vector(0)"
    ),
    # A task that raised is a failure signal even when Dramatiq will retry it.
    "taskFailureRate": (
        f'(sum(rate(cricalgo_tasks_total{{{_SEL}, outcome=~"failure|retry|dead_letter"}}'
        "[{interval}])) or vector(0))"
        f" / sum(rate(cricalgo_tasks_total{{{_SEL}}}[{{interval}}]))"
    ),
    "taskDurationP95": (
        "histogram_quantile(0.95, sum by (le) ("
        f"rate(cricalgo_task_duration_seconds_bucket{{{_SEL}}}[{{interval}}])))"
    ),
    "queueDepth": f"max(max_over_time(cricalgo_queue_depth{{{_SEL}}}[{{interval}}]))",
}

_MESH = (
    'reporter="destination", destination_workload_namespace="{namespace}",'
    ' destination_workload="{workload}"'
)
# Istio sees HTTP only; worker and queue checks keep the workload's own metrics.
_ISTIO: Mapping[str, str] = {
    **_WORKLOAD,
    REQUESTS: f"sum(increase(istio_requests_total{{{_MESH}}}[{{interval}}]))",
    "errors": (
        f'sum(increase(istio_requests_total{{{_MESH}, response_code=~"5.."}}[{{interval}}]))'
        " or vector(0)"
    ),
    "errorRate": (
        f'(sum(rate(istio_requests_total{{{_MESH}, response_code=~"5.."}}[{{interval}}]))'
        " or vector(0))"
        f" / sum(rate(istio_requests_total{{{_MESH}}}[{{interval}}]))"
    ),
    "latencyP95": (
        "histogram_quantile(0.95, sum by (le) ("
        f"rate(istio_request_duration_milliseconds_bucket{{{_MESH}}}[{{interval}}]))) / 1000"
    ),
    "latencyP99": (
        "histogram_quantile(0.99, sum by (le) ("
        f"rate(istio_request_duration_milliseconds_bucket{{{_MESH}}}[{{interval}}]))) / 1000"
    ),
}

TEMPLATE_SETS: Mapping[str, Mapping[str, str]] = {"workload": _WORKLOAD, "istio": _ISTIO}


def builtin_template(template_set: str, metric: str) -> str:
    """The built-in query template of `metric` in `template_set` (KeyError if none)."""
    return TEMPLATE_SETS[template_set][metric]


@dataclass(frozen=True)
class TemplateVars:
    namespace: str
    name: str
    track: str
    version: str
    interval: str  # a PromQL duration, e.g. "1m" or "5s"

    @property
    def workload(self) -> str:
        return f"{self.name}-app-canary" if self.track == CANARY else f"{self.name}-app"


def render_query(template: str, variables: TemplateVars) -> str:
    """Substitute the template variables; label values are escaped for PromQL strings."""

    def value(match: re.Match[str]) -> str:
        raw = str(getattr(variables, match.group(1)))
        return raw.replace("\\", "\\\\").replace('"', '\\"')

    return _VARIABLE.sub(value, template)


def promql_duration(seconds: float) -> str:
    """Seconds as a PromQL range ("90s" -> "90s", "60" -> "1m"); at least 1s."""
    whole = max(1, round(seconds))
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"
