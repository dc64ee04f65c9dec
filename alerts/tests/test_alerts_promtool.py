"""The Prometheus rules in alerts/: valid, unit-tested by promtool, and documented.

promtool comes from Debian's `prometheus` package, which `make test` installs; a missing
promtool is a broken setup, so these tests fail (never skip) without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "cricalgo-alerts.yaml"
PROMTOOL_TESTS = sorted((REPO / "alerts" / "tests").glob("*_test.yaml"))
RUNBOOK = REPO / "docs" / "runbook.md"
METRICS_DOC = REPO / "docs" / "metrics.md"
CRD = REPO / "crds" / "cricalgodeployment.yaml"
RUNBOOK_URL = "https://github.com/cricalgo/cricalgo/blob/main/docs/runbook.md#"

# Standard cAdvisor / kube-state-metrics series the resource alerts join against.
EXTERNAL_METRICS = {
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "kube_pod_container_resource_limits",
    "kube_pod_labels",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# What the rollout summary asks for, plus operator health. Renaming one is a breaking
# change for whoever routes these alerts, so the list is pinned here.
EXPECTED_ALERTS = {
    "CricAlgoHighLatencyP95",
    "CricAlgoHighLatencyP99",
    "CricAlgoHighAverageLatency",
    "CricAlgoErrorRateCritical",
    "CricAlgoErrorRateWarning",
    "CricAlgoQueueDepthHigh",
    "CricAlgoInboxPendingTooOld",
    "CricAlgoDeadLetters",
    "CricAlgoDepositsParked",
    "CricAlgoTaskFailureRateHigh",
    "CricAlgoDepositsRejectedHigh",
    "CricAlgoDBPoolSaturated",
    "CricAlgoDBConnectionsNearLimit",
    "CricAlgoHighCPU",
    "CricAlgoHighMemory",
    "CricAlgoCanaryStuck",
    "CricAlgoCanaryTransitionStuck",
    "CricAlgoCanaryPausedTooLong",
    "CricAlgoCanaryRolledBack",
    "CricAlgoCanaryAnalysisErrors",
    "CricAlgoCanaryAnalysisNoData",
    "CricAlgoOperatorReconcileErrors",
}
# Alerts on the operator's own metrics are per CR or per kind; every other alert is
# about the workload and must keep `app` (the CR) and `track`, so two CRs, and canary and
# stable, alert apart.
OPERATOR_GROUP = "cricalgo-operator"


def promtool() -> str:
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if path is None:
        pytest.fail(
            "promtool not found on PATH or at /usr/bin/promtool. It ships with Debian's "
            "`prometheus` package; run `make test` (it installs the system packages) or "
            "`sudo apt-get install prometheus`.",
            pytrace=False,
        )
    return path


def load_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alert_rules() -> list[tuple[str, dict[str, Any]]]:
    return [
        (group["name"], rule)
        for group in load_rules()
        for rule in group["rules"]
        if "alert" in rule
    ]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            text = re.sub(r"[`*_]", "", match.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\|\s*`([a-z_:][a-z0-9_:]*)`", METRICS_DOC.read_text(), re.MULTILINE))


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers outside quotes and label matchers)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_strings)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_matchers))
    return {t for t in tokens if t.startswith(("cricalgo_", "container_", "kube_"))}


def promtool_cases() -> list[tuple[str, str, bool]]:
    """(test file, alert name, fires?) for every alert_rule_test in the promtool tests."""
    cases = []
    for path in PROMTOOL_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((path.name, case["alertname"], bool(case.get("exp_alerts"))))
    return cases


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output


def test_promtool_unit_tests_pass() -> None:
    assert PROMTOOL_TESTS, "no promtool unit tests found in alerts/tests"
    result = subprocess.run(
        [promtool(), "test", "rules", *(p.name for p in PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES.parent / "tests",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(PROMTOOL_TESTS), output
    assert "FAILED" not in output


def test_every_promtool_test_file_loads_the_rules() -> None:
    for path in PROMTOOL_TESTS:
        assert yaml.safe_load(path.read_text())["rule_files"] == ["../cricalgo-alerts.yaml"], path


def test_the_expected_alerts_exist_and_no_more() -> None:
    names = [rule["alert"] for _, rule in alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) == EXPECTED_ALERTS
    assert len(names) >= 15


@pytest.mark.parametrize(
    ("group", "rule"), alert_rules(), ids=lambda v: v.get("alert", v) if isinstance(v, dict) else v
)
def test_alert_has_severity_summary_description_and_runbook(
    group: str, rule: dict[str, Any]
) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"].strip()) > len(annotations["summary"].strip())
    url = annotations["runbook_url"]
    assert url == RUNBOOK_URL + rule["alert"].lower(), url


def test_every_runbook_url_anchor_exists_in_the_runbook() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    missing = [
        rule["alert"]
        for _, rule in alert_rules()
        if rule["annotations"]["runbook_url"].split("#", 1)[1] not in anchors
    ]
    assert not missing, f"docs/runbook.md has no section for: {missing}"


def test_every_alert_has_a_firing_and_a_not_firing_promtool_case() -> None:
    cases = promtool_cases()
    firing = {name for _, name, fires in cases if fires}
    quiet = {name for _, name, fires in cases if not fires}
    names = {rule["alert"] for _, rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a not-firing test"
    assert {name for _, name, _ in cases} <= names, "tests name an alert that does not exist"


def test_workload_alerts_fire_per_app_and_track() -> None:
    workload = {rule["alert"] for group, rule in alert_rules() if group != OPERATOR_GROUP}
    checked = 0
    for path in PROMTOOL_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case["alertname"] not in workload:
                    continue
                for expected in case.get("exp_alerts") or []:
                    labels = expected["exp_labels"]
                    assert labels.get("track") in {"stable", "canary"}, case
                    assert labels.get("app"), case
                    checked += 1
    assert checked >= len(workload)


def test_rules_use_only_documented_metrics() -> None:
    documented = documented_metrics()
    assert "cricalgo_http_requests_total" in documented, "docs/metrics.md table not parsed"
    recorded = {
        rule["record"] for group in load_rules() for rule in group["rules"] if "record" in rule
    }
    used: set[str] = set()
    for group in load_rules():
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    assert used, "no metric found in the rules"
    undocumented = set()
    for name in used - EXTERNAL_METRICS:
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in documented:
                base = name.removesuffix(suffix)
        if base not in documented:
            undocumented.add(name)
    assert not undocumented, f"metrics used in alerts/ but not in docs/metrics.md: {undocumented}"
    # Recording rules follow level:metric:operations and never shadow a raw metric.
    for name in recorded:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name
        assert not name.startswith("cricalgo_")


# Alerts whose threshold is one of the canary SLOs (spec.canary.slo), which the operator's
# analysis uses as its promotion gate: a human and the operator must agree on "healthy".
SLO_THRESHOLDS = {
    "CricAlgoHighLatencyP95": "latencyP95",
    "CricAlgoHighLatencyP99": "latencyP99",
    "CricAlgoErrorRateWarning": "errorRate",
    "CricAlgoQueueDepthHigh": "queueDepth",
}


def test_slo_alert_thresholds_equal_the_crd_defaults() -> None:
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    slo = spec["properties"]["canary"]["properties"]["slo"]["properties"]
    rules = {rule["alert"]: rule for _, rule in alert_rules()}
    for alert, field in SLO_THRESHOLDS.items():
        match = re.search(r">\s*([0-9.]+)\s*$", rules[alert]["expr"].strip())
        assert match, f"{alert}: expression does not end in '> threshold'"
        assert float(match.group(1)) == float(slo[field]["default"]), (alert, field)


def test_metric_name_extraction_ignores_labels_and_strings() -> None:
    expr = 'sum by (track) (rate(cricalgo_tasks_total{outcome="cricalgo_x"}[5m])) / ns:cricalgo_y:r'
    assert metric_names(expr) == {"cricalgo_tasks_total"}
