"""Containers as local processes: which program an image runs, and one container's
process with its restarts, probes and the status a kubelet would report for it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kube_api import now_rfc3339
from .probes import ProbeTracker, run_probe
from .processes import terminate_group

# The project's own images and the program each one's entrypoint names. Any registry
# prefix and any tag match: `ghcr.io/acme/cricalgo/workload:v2` runs `cricalgo-workload`.
IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "cricalgo/workload": ["cricalgo-workload"],
    "cricalgo/operator": ["cricalgo-operator"],
    # The local node's own test image (see probe_server.py).
    "cricalgo/probe": [sys.executable, "-m", "cricalgo_localstack.probe_server"],
}

# Crash-loop back-off: shorter than a kubelet's 10 s .. 5 min so tests see restarts quickly.
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
# kubelet's minimumGracePeriodInSeconds: SIGTERM's time after a preStop hook that ran long.
MIN_GRACE_AFTER_HOOK = 2.0


def image_repository(image: str) -> str:
    """`registry:5000/cricalgo/workload:v2@sha256:...` -> `cricalgo/workload`."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[: name.rfind(":")]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def image_entrypoint(image: str) -> list[str] | None:
    """The program an image of the project runs, or None for an image the node cannot run."""
    repo = image_repository(image)
    for known, argv in IMAGE_ENTRYPOINTS.items():
        if repo == known or repo.endswith("/" + known):
            return list(argv)
    return None


def resolve_executable(argv0: str, bin_dir: Path) -> str:
    """Console scripts come from the project's virtualenv, like an image's PATH would."""
    if "/" not in argv0 and (bin_dir / argv0).exists():
        return str(bin_dir / argv0)
    return argv0


@dataclass
class ContainerProcess:
    """One container of a pod: its process, its restarts and its probes."""

    spec: Mapping[str, Any]
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    pod_ip: str
    restart_policy: str = "Always"
    init: bool = False
    grace: float = 30.0
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    restart_count: int = field(default=0, init=False)
    started_at: str | None = field(default=None, init=False)
    terminated: dict[str, Any] | None = field(default=None, init=False)
    last_terminated: dict[str, Any] | None = field(default=None, init=False)
    waiting: tuple[str, str] | None = field(default=("ContainerCreating", ""), init=False)
    restart_at: float | None = field(default=None, init=False)
    backoff: float = field(default=BACKOFF_START, init=False)
    running_since: float = field(default=0.0, init=False)
    readiness: ProbeTracker | None = field(default=None, init=False)
    liveness: ProbeTracker | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def pid_file(self) -> Path:
        return self.log_path.with_suffix(".pid")

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def done(self) -> bool:
        """Exited and will not be restarted."""
        return self.popen is None and self.terminated is not None and self.restart_at is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        now = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(
                f"--- {now_rfc3339()} container {self.name} starting "
                f"(restart {self.restart_count}): {' '.join(self.argv)}\n".encode()
            )
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.spec.get("workingDir") or None,
                    start_new_session=True,
                )
            except OSError as err:
                log.write(f"--- cannot start: {err}\n".encode())
                self._exited(128, "StartError", str(err), now)
                return
        self.pid_file.write_text(str(self.popen.pid))
        self.started_at = now_rfc3339()
        self.running_since = now
        self.terminated, self.waiting, self.restart_at = None, None, None
        self.readiness = self._tracker("readinessProbe", passing=False, now=now)
        self.liveness = self._tracker("livenessProbe", passing=True, now=now)

    def _tracker(self, key: str, passing: bool, now: float) -> ProbeTracker | None:
        probe = self.spec.get(key)
        return ProbeTracker(probe, now, passing) if probe else None

    def ready(self) -> bool:
        if not self.running():
            return False
        return self.readiness.passing if self.readiness else True

    def stop(self, grace: float) -> None:
        """The preStop hook, then SIGTERM, then SIGKILL once `grace` seconds (counted from
        the start, hook included, as a kubelet counts them) have passed."""
        if self.popen is None:
            return
        started = time.monotonic()
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        remaining = grace
        if hook and self.running():
            self._pre_stop(hook, grace)
            # A kubelet gives SIGTERM at least 2 s even when the hook used up the grace period.
            remaining = max(grace - (time.monotonic() - started), MIN_GRACE_AFTER_HOOK)
        terminate_group(self.popen.pid, remaining, signal.SIGTERM)
        code = self.popen.wait()
        self._exited(code, "Completed" if code == 0 else "Error", "", time.monotonic())
        self.restart_at = None

    def _pre_stop(self, hook: Mapping[str, Any], grace: float) -> None:
        """Run a preStop hook (`sleep`, `exec` or `httpGet`) for at most `grace` seconds."""
        if "sleep" in hook:
            seconds = min(float(hook["sleep"].get("seconds", 0)), grace)
            time.sleep(seconds)
            message = f"slept {seconds:g}s"
        else:
            probe = {**hook, "timeoutSeconds": max(grace, 1)}
            _, message = run_probe(probe, self.pod_ip, self.spec.get("ports") or [], self.env)
        with self.log_path.open("ab") as log:
            log.write(f"--- preStop: {message}\n".encode())

    def _exited(self, code: int, reason: str, message: str, now: float) -> None:
        # A signal death shows as 128 + signal number, like a container runtime reports it.
        exit_code = 128 - code if code < 0 else code
        self.terminated = {
            "exitCode": exit_code,
            "reason": "Completed"
            if exit_code == 0
            else ("Error" if reason == "Completed" else reason),
            "startedAt": self.started_at,
            "finishedAt": now_rfc3339(),
            **({"message": message} if message else {}),
        }
        self.popen = None
        self.pid_file.unlink(missing_ok=True)
        self.readiness = self.liveness = None
        restart = self.restart_policy == "Always" or (
            self.restart_policy == "OnFailure" and exit_code != 0
        )
        if self.init and exit_code == 0:
            restart = False
        if restart:
            if now - self.running_since > 60:
                self.backoff = BACKOFF_START
            delay = 0.0 if self.restart_count == 0 else self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            self.restart_at = now + delay
        else:
            self.restart_at = None

    def tick(self, env: Mapping[str, str], now: float) -> list[tuple[str, str, str]]:
        """Reap, restart and probe; return the events (type, reason, message) it caused."""
        events: list[tuple[str, str, str]] = []
        if self.popen is not None and self.popen.poll() is not None:
            code = self.popen.returncode
            self._exited(code, "Completed" if code == 0 else "Error", "", now)
            if self.restart_at is not None:
                events.append(("Warning", "BackOff", f"container {self.name} exited with {code}"))
        if self.popen is None and self.restart_at is not None and now >= self.restart_at:
            self.last_terminated = self.terminated
            self.restart_count += 1
            self.start()
            events.append(("Normal", "Started", f"Restarted container {self.name}"))
        if not self.running():
            if self.restart_at is not None:
                self.waiting = ("CrashLoopBackOff", f"back-off restarting {self.name}")
            return events
        for tracker, kind in ((self.readiness, "Readiness"), (self.liveness, "Liveness")):
            if tracker is None or not tracker.due(now):
                continue
            passed, message = run_probe(
                tracker.probe, self.pod_ip, self.spec.get("ports") or [], env
            )
            changed = tracker.record(passed, message, now)
            if changed and not tracker.passing:
                events.append(("Warning", "Unhealthy", f"{kind} probe failed: {message}"))
        if self.liveness is not None and not self.liveness.passing:
            events.append(("Normal", "Killing", f"Container {self.name} failed liveness probe"))
            assert self.popen is not None
            terminate_group(self.popen.pid, self.grace, signal.SIGTERM)
            self._exited(self.popen.wait(), "Error", "liveness probe failed", now)
            if self.restart_policy == "Never":
                self.restart_at = None
            else:
                self.restart_at = now
        return events

    def status(self, image: str) -> dict[str, Any]:
        """This container's entry of `status.containerStatuses`."""
        state: dict[str, Any]
        if self.running():
            state = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None and self.restart_at is None:
            state = {"terminated": self.terminated}
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        entry: dict[str, Any] = {
            "name": self.name,
            "image": image,
            "imageID": f"cricalgo-local://{image_repository(image)}",
            "ready": self.ready(),
            "started": self.running(),
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.popen is not None:
            entry["containerID"] = f"cricalgo-local://{self.popen.pid}"
        return entry


def kill_recorded(pid_file: Path) -> None:
    """Kill the process group a pid file names (a node that died without stopping its pods)."""
    with contextlib.suppress(ValueError, FileNotFoundError):
        pid = int(pid_file.read_text().strip())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
