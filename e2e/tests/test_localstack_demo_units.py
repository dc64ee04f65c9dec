"""The demo's measurements as pure functions: which track's workers took the tasks at each
step, the time from the first fault to weight 0, the requests the mesh retried, and the
summary the demo prints."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cricalgo_localstack.demo_report import (
    PROMOTE,
    ROLLBACK,
    DemoResult,
    fault_to_weight_zero,
    mesh_failures,
    retried_requests,
)
from cricalgo_localstack.worker_split import (
    StepSplit,
    WorkerSample,
    metrics_port,
    split_by_step,
    tasks_taken,
)


def sample(t: float, weight: int, **pods: tuple[str, float]) -> WorkerSample:
    return WorkerSample(t, weight, pods)


def test_tasks_are_attributed_to_the_weight_and_workers_that_held_between_samples() -> None:
    samples = [
        sample(0, 25, s1=("stable", 10), s2=("stable", 10), s3=("stable", 5), c1=("canary", 0)),
        sample(1, 25, s1=("stable", 20), s2=("stable", 19), s3=("stable", 16), c1=("canary", 10)),
        # A stable worker stops: this interval is left out (its tasks are unknown).
        sample(2, 25, s1=("stable", 30), s2=("stable", 29), c1=("canary", 20)),
        sample(3, 50, s1=("stable", 40), s2=("stable", 39), c1=("canary", 30)),
        sample(4, 50, s1=("stable", 45), s2=("stable", 44), c1=("canary", 35), c2=("canary", 0)),
        sample(5, 50, s1=("stable", 50), s2=("stable", 50), c1=("canary", 40), c2=("canary", 6)),
        # A counter going down is a restarted process: nothing is counted for it.
        sample(6, 50, s1=("stable", 55), s2=("stable", 1), c1=("canary", 45), c2=("canary", 12)),
    ]
    splits = {(s.weight, s.stable_workers, s.canary_workers): s for s in split_by_step(samples)}
    assert set(splits) == {(25, 3, 1), (50, 2, 2)}
    quarter = splits[(25, 3, 1)]
    assert quarter.tasks == Counter({"stable": 30, "canary": 10})
    assert quarter.canary_share == 25.0
    assert quarter.expected_share == 25.0
    half = splits[(50, 2, 2)]
    assert half.tasks == Counter({"stable": 16, "canary": 22})
    assert half.expected_share == 50.0


def test_tasks_taken_sums_every_outcome_of_the_task_counter() -> None:
    text = (
        "# HELP cricalgo_tasks_total Task executions by outcome\n"
        "# TYPE cricalgo_tasks_total counter\n"
        'cricalgo_tasks_total{actor="credit_deposit",outcome="success",track="canary"} 41.0\n'
        'cricalgo_tasks_total{actor="credit_deposit",outcome="retry",track="canary"} 2.0\n'
        'cricalgo_tasks_created{actor="credit_deposit",outcome="success"} 1.7e9\n'
        "cricalgo_queue_depth 7.0\n"
    )
    assert tasks_taken(text) == 43.0
    annotated = {
        "metadata": {"annotations": {"prometheus.io/port": "9191"}},
        "spec": {"containers": []},
    }
    named = {
        "metadata": {},
        "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9292}]}]},
    }
    assert (metrics_port(annotated), metrics_port(named)) == (9191, 9292)


def test_fault_to_weight_zero_runs_from_the_first_500_to_the_first_weight_0_after_it() -> None:
    answers = [(100.0, 202), (104.5, 500), (105.0, 202), (106.0, 500), (130.0, 500)]
    samples = [
        {"t": 90.0, "weight": 0},
        {"t": 101.0, "weight": 25},
        {"t": 110.0, "weight": 25},
        {"t": 121.5, "weight": 0},
    ]
    assert fault_to_weight_zero(answers, samples, 95.0, 200.0) == 17.0
    # No 500 in the window: no fault seen, nothing to measure.
    assert fault_to_weight_zero(answers, samples, 0.0, 104.0) is None
    assert mesh_failures(Counter({202: 90, 500: 7, 502: 2, 503: 1, 0: 1})) == 4


def test_retried_requests_are_read_from_the_mesh_access_log(tmp_path: Path) -> None:
    log = tmp_path / "mesh-access.log"
    log.write_text(
        "2026-11-27T03:40:01+00:00 host=payments.local status=202 upstream=127.1.0.5:8000 "
        'upstream_status=202 duration=0.004 "POST /api/v1/webhooks/deposit HTTP/1.1"\n'
        "2026-11-27T03:40:02+00:00 host=payments.local status=202 "
        "upstream=127.1.0.6:8000, 127.1.0.5:8000 upstream_status=502, 202 duration=0.006 "
        '"POST /api/v1/webhooks/deposit HTTP/1.1"\n'
        "2026-11-27T03:45:00+00:00 host=payments.local status=202 "
        "upstream=127.1.0.6:8000, 127.1.0.5:8000 upstream_status=502, 202 duration=0.006 "
        '"POST /api/v1/webhooks/deposit HTTP/1.1"\n'
    )
    from datetime import datetime

    start = datetime.fromisoformat("2026-11-27T03:40:00+00:00").timestamp()
    assert retried_requests(log, start, start + 60) == 1
    assert retried_requests(log, start, start + 600) == 2
    assert retried_requests(tmp_path / "none.log", start, start + 60) == 0


def test_the_measurements_say_what_issue_6_asks_for() -> None:
    result = DemoResult(
        outcomes=["promoted", "rolledBack"],
        phases=[(PROMOTE, 0.0, 112.0), (ROLLBACK, 120.0, 146.0)],
        mesh_answers={PROMOTE: Counter({202: 5000, 0: 1}), ROLLBACK: Counter({202: 900, 500: 50})},
        mesh_retried={PROMOTE: 2, ROLLBACK: None},
        resent={PROMOTE: 1},
        accepted=5900,
        lost=0,
        doubled=0,
        fault_to_weight_zero=15.3,
        worker_split=[StepSplit(25, 3, 1, Counter({"stable": 750, "canary": 250}))],
        steps=[25, 50, 100],
        step_seconds=30,
    )
    lines = result.measurements()
    assert lines[0].startswith(f"{PROMOTE}: 112s; mesh answers 0 x1, 202 x5000;")
    assert not [line for line in lines if "{" in line]  # sentences, not Python dicts
    assert "mesh failures (502/503/504/no answer) 1; retried on another pod 2" in lines[0]
    assert "sent again after a closed connection 1" in lines[0]
    assert "mesh failures (502/503/504/no answer) 0; sent again" in lines[1]
    assert "promotion took 112s for 3 steps of 30s (at least 90s configured)" in lines
    assert "fault start to canary weight 0: 15.3s" in lines
    assert lines[-2].endswith("canary 25.0% (worker share 25%)")
    assert lines[-1] == "deposits answered 202: 5900; not credited: 0; credited twice: 0"
    assert result.ok
