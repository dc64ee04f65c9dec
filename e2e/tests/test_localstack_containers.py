"""A container's process on the local node stops as a kubelet stops it: the preStop hook,
then SIGTERM, then SIGKILL when the grace period is over (real processes, no pod needed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cricalgo_localstack.containers import ContainerProcess

# Exits 0 half a second after SIGTERM, saying so; only SIGKILL stops it sooner.
GRACEFUL = "trap 'echo got TERM; sleep 0.5; echo done; exit 0' TERM; while :; do sleep 0.1; done"


def container(tmp_path: Path, lifecycle: dict[str, Any] | None = None) -> ContainerProcess:
    spec: dict[str, Any] = {"name": "app", "image": "cricalgo/probe:v1"}
    if lifecycle:
        spec["lifecycle"] = lifecycle
    process = ContainerProcess(
        spec=spec,
        argv=["sh", "-c", GRACEFUL],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "app.log",
        pod_ip="127.0.0.1",
        restart_policy="Never",
    )
    process.start()
    return process


def test_a_prestop_sleep_runs_before_sigterm_and_the_process_exits_gracefully(
    tmp_path: Path,
) -> None:
    process = container(tmp_path, {"preStop": {"sleep": {"seconds": 1}}})
    process.stop(grace=10)
    assert process.terminated is not None
    assert process.terminated["exitCode"] == 0
    lines = (tmp_path / "app.log").read_text().splitlines()
    assert lines.index("--- preStop: slept 1s") < lines.index("got TERM") < lines.index("done")


def test_a_hook_that_uses_up_the_grace_period_still_leaves_sigterm_two_seconds(
    tmp_path: Path,
) -> None:
    # As a kubelet does (minimumGracePeriodInSeconds): without it, SIGKILL would follow
    # SIGTERM at once and the process could not finish.
    process = container(tmp_path, {"preStop": {"sleep": {"seconds": 5}}})
    process.stop(grace=1)
    assert process.terminated is not None
    assert process.terminated["exitCode"] == 0
    lines = (tmp_path / "app.log").read_text().splitlines()
    assert lines.index("--- preStop: slept 1s") < lines.index("done")


def test_without_a_hook_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    process = ContainerProcess(
        spec={"name": "stubborn", "image": "cricalgo/probe:v1"},
        argv=["sh", "-c", "trap '' TERM; echo ignoring; while :; do sleep 0.1; done"],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "stubborn.log",
        pod_ip="127.0.0.1",
        restart_policy="Never",
    )
    process.start()
    log, deadline = tmp_path / "stubborn.log", time.monotonic() + 30
    while "ignoring" not in log.read_text().splitlines() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.stop(grace=0.5)
    assert process.terminated is not None
    assert process.terminated["exitCode"] == 137
