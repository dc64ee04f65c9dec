"""Pure parts of running the canary: control annotations, status patches, plugin output."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cricalgo_operator.canary import (
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Phase,
    Reading,
    Readings,
)
from cricalgo_operator.canary.controls import (
    consumed_patch,
    control_from_annotations,
    pause_patch,
    request_patch,
)
from cricalgo_operator.canary.daemon import is_analysed, probe_period
from cricalgo_operator.canary.engine import decide
from cricalgo_operator.canary.runner import ignored_requests, needs_readings
from cricalgo_operator.plugin import parse_args, render_status

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("annotations", "control"),
    [
        ({}, Control()),
        ({"cricalgo.io/promote": "step"}, Control(promote="step")),
        ({"cricalgo.io/promote": "full"}, Control(promote="full")),
        ({"cricalgo.io/promote": ""}, Control(promote="step")),
        ({"cricalgo.io/abort": "2026-11-26T12:00:00Z"}, Control(abort=True)),
        ({"cricalgo.io/retry": "x", "cricalgo.io/resume": "y"}, Control(retry=True, resume=True)),
        ({"other.io/promote": "full"}, Control()),
    ],
)
def test_control_annotations(annotations: dict[str, str], control: Control) -> None:
    assert control_from_annotations(annotations) == control


def test_request_and_consumption_patches() -> None:
    assert request_patch("retry", "t1") == {
        "metadata": {"annotations": {"cricalgo.io/retry": "t1"}}
    }
    assert consumed_patch(frozenset({"promote", "resume"})) == {
        "metadata": {"annotations": {"cricalgo.io/promote": None, "cricalgo.io/resume": None}}
    }
    assert pause_patch(True) == {"spec": {"canary": {"paused": True}}}


def test_one_status_patch_carries_the_whole_decision() -> None:
    spec = {"image": "app:v2", "canary": {"stepDuration": "1m", "decision": "count"}}
    cfg = CanaryConfig.from_spec(spec)
    before = CanaryStatus(
        phase=Phase.PROGRESSING,
        stable_image="app:v1",
        canary_image="app:v2",
        canary_weight=10,
        current_step=0,
        step_started_at=T0,
    )
    bad = Readings(
        [Reading("requests", "canary", 100.0), Reading("errorRate", "canary", 0.9)]
        + [Reading(n, "canary", 0.0) for n in ("latencyP95", "latencyP99", "queueDepth")]
        + [Reading("tasks", "canary", 100.0), Reading("taskFailureRate", "canary", 0.0)]
    )
    decision = decide(cfg, before, bad, T0)
    patch = decision.status.patch_from(before.to_dict())
    # One patch carries the whole rollback: phase, weight, failed image, history, analysis.
    assert patch["phase"] == "RollingBack"
    assert patch["canaryWeight"] == 0
    assert patch["failedImage"] == "app:v2"
    assert [h["outcome"] for h in patch["history"]] == ["rolledBack"]
    assert {c["type"]: c["status"] for c in patch["conditions"]}["Progressing"] == "True"
    assert "stableImage" not in patch  # unchanged fields are not written
    assert patch["lastAnalysis"]["verdict"] == "fail"
    error = next(m for m in patch["lastAnalysis"]["metrics"] if m["name"] == "errorRate")
    assert error == {
        "name": "errorRate",
        "track": "canary",
        "value": 0.9,
        "threshold": 0.005,
        "verdict": "fail",
        "reason": "0.9 > max 0.005",
    }


def test_readings_are_only_queried_for_a_running_canary() -> None:
    cfg = CanaryConfig.from_spec({"image": "app:v2"})
    running = CanaryStatus(phase=Phase.PROGRESSING, canary_revision="app:v2", current_step=1)
    assert needs_readings(cfg, running)
    assert not needs_readings(cfg, running.evolve(current_step=-1))
    assert not needs_readings(cfg, running.evolve(phase=Phase.READY))
    assert not needs_readings(cfg, running.evolve(canary_revision="app:v3"))


def test_status_output_shows_steps_weight_and_each_slo() -> None:
    body = {
        "metadata": {"name": "pay", "namespace": "shop"},
        "spec": {"image": "app:v2", "canary": {"stepDuration": "10m"}},
        "status": {
            "phase": "Progressing",
            "stableImage": "app:v1",
            "canaryImage": "app:v2",
            "canaryWeight": 25,
            "currentStep": 1,
            "failedChecks": 1,
            "lastAnalysis": {
                "time": "2026-11-26T12:00:00Z",
                "verdict": "fail",
                "metrics": [
                    {
                        "name": "errorRate",
                        "track": "canary",
                        "value": 0.0123,
                        "threshold": 0.005,
                        "verdict": "fail",
                        "reason": "0.0123 > max 0.005",
                    },
                    {
                        "name": "latencyP95",
                        "track": "canary",
                        "value": None,
                        "threshold": 2.0,
                        "verdict": "nodata",
                        "reason": "no data: empty",
                    },
                ],
            },
            "history": [
                {
                    "image": "app:v0",
                    "outcome": "promoted",
                    "reason": "all steps passed",
                    "finishedAt": "2026-11-25T10:00:00Z",
                }
            ],
        },
    }
    text = render_status(body)
    assert "shop/pay: Progressing  weight 25%" in text
    assert "10 [25] 50 100" in text
    assert "failed checks 1/3" in text
    lines = text.splitlines()
    error = next(line for line in lines if line.strip().startswith("errorRate"))
    assert error.split()[:5] == ["errorRate", "canary", "0.0123", "0.005", "fail"]
    p95 = next(line for line in lines if line.strip().startswith("latencyP95"))
    assert p95.split()[:5] == ["latencyP95", "canary", "-", "2", "nodata"]
    assert "app:v0  promoted  all steps passed" in text


def test_plugin_arguments() -> None:
    args = parse_args(["promote", "pay", "--full", "-n", "shop"])
    assert (args.command, args.name, args.full, args.namespace) == ("promote", "pay", True, "shop")
    with pytest.raises(SystemExit):
        parse_args(["explode", "pay"])


def test_requests_that_do_not_apply_are_dropped_not_kept_for_later() -> None:
    cfg = CanaryConfig.from_spec({"image": "app:v1"})
    ready = CanaryStatus(phase=Phase.READY, stable_image="app:v1")
    annotations = {"cricalgo.io/promote": "full", "unrelated.io/x": "y"}
    decision = decide(cfg, ready, Readings(), T0, control_from_annotations(annotations))
    assert ignored_requests(annotations, decision) == {"promote"}
    # A tick that creates the canary leaves the requests to the next one, which sees it.
    newer = CanaryConfig.from_spec({"image": "app:v2"})
    waiting = decide(newer, ready, Readings(), T0, control_from_annotations(annotations))
    assert waiting.action == Action.CREATE
    assert ignored_requests(annotations, waiting) == frozenset()


def test_fail_fast_probes_run_four_times_an_interval_but_not_faster_than_twice_a_second() -> None:
    assert probe_period(60) == 15
    assert probe_period(2) == 0.5
    assert probe_period(1) == 0.5
    running = CanaryStatus(phase=Phase.PROGRESSING, canary_image="app:v2", current_step=0)
    assert is_analysed(running)
    assert not is_analysed(running.evolve(current_step=-1))  # no traffic yet: nothing to judge
    assert not is_analysed(running.evolve(phase=Phase.PAUSED))
