"""Readiness and liveness probes as a kubelet runs them: httpGet, tcpSocket and exec,
with initialDelaySeconds, periodSeconds, timeoutSeconds and the two thresholds."""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def resolve_port(port: int | str, container_ports: Sequence[Mapping[str, Any]]) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for entry in container_ports:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def run_probe(
    probe: Mapping[str, Any],
    pod_ip: str,
    container_ports: Sequence[Mapping[str, Any]],
    env: Mapping[str, str],
) -> tuple[bool, str]:
    """Run one probe once: (passed, what happened)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            port = resolve_port(spec["port"], container_ports)
            host = spec.get("host") or pod_ip
            conn_type = (
                http.client.HTTPSConnection
                if spec.get("scheme", "HTTP").upper() == "HTTPS"
                else http.client.HTTPConnection
            )
            conn = conn_type(host, port, timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
                conn.request("GET", spec.get("path", "/"), headers=headers)
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400, f"HTTP probe to {host}:{port} answered {status}"
        if "tcpSocket" in probe:
            port = resolve_port(probe["tcpSocket"]["port"], container_ports)
            with socket.create_connection((pod_ip, port), timeout=timeout):
                return True, f"TCP {pod_ip}:{port} accepted"
        if "exec" in probe:
            command = list(probe["exec"]["command"])
            proc = subprocess.run(
                command, env=dict(env), capture_output=True, timeout=timeout, check=False
            )
            return proc.returncode == 0, f"exec {command[0]} exited {proc.returncode}"
    except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException) as err:
        return False, f"probe failed: {err}"
    return False, f"unsupported probe handler {sorted(probe)}"


@dataclass
class ProbeTracker:
    """The state of one probe of one container (times are monotonic seconds)."""

    probe: Mapping[str, Any]
    started_at: float
    passing: bool
    successes: int = 0
    failures: int = 0
    next_due: float = field(default=0.0)
    last_message: str = ""

    def __post_init__(self) -> None:
        self.next_due = self.started_at + float(self.probe.get("initialDelaySeconds", 0))

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def record(self, passed: bool, message: str, now: float) -> bool:
        """Count a result; return whether the probe's verdict changed."""
        self.next_due = now + float(self.probe.get("periodSeconds", 10))
        self.last_message = message
        before = self.passing
        if passed:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold", 1)):
                self.passing = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(self.probe.get("failureThreshold", 3)):
                self.passing = False
        return before != self.passing
