"""Rollout notifications: which events a status write is (pure), their payloads and Standard
Webhooks signatures (checked with the reference `standardwebhooks` library), and delivery to
a real HTTP receiver on loopback, with URLs and signing secrets in Secrets on the real API
server, from a canary the real operator runs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from cricalgo_localstack.polling import wait_for
from cricalgo_operator import metrics
from cricalgo_operator.kubeapi import KubeApi
from cricalgo_operator.model import Cad
from cricalgo_operator.notifications import sender as notifications
from cricalgo_operator.notifications.events import Happened, RolloutEvent, what_happened
from cricalgo_operator.notifications.payloads import (
    describe,
    encode,
    signature_headers,
    slack_payload,
    webhook_payload,
)
from cricalgo_operator.notifications.sender import Notifier
from cricalgo_operator.status import write_status
from test_canary_cluster import (  # loaded by conftest.py
    IMAGE,
    V1,
    V2,
    Canary,
    OperatorProcess,
    healthy,
    operator_kubeconfig,
)

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
STARTED = "2026-05-01T11:59:00Z"
E = RolloutEvent


def events(before: dict[str, Any], after: dict[str, Any]) -> list[RolloutEvent]:
    return [h.event for h in what_happened(before, after)]


# --- which events (pure) ---------------------------------------------------------------


def test_a_canary_start_and_its_first_step() -> None:
    ready = {"phase": "Ready", "stableImage": "app:1", "currentStep": -1}
    created = {**ready, "phase": "Progressing", "canaryImage": "app:2", "canaryStartedAt": STARTED}
    assert events(ready, created) == [E.STARTED]
    first = {**created, "currentStep": 0, "canaryWeight": 10}
    [step] = what_happened(created, first)
    assert (step.event, step.weight, step.step, step.canary_image) == (
        E.STEP_ADVANCED,
        10,
        0,
        "app:2",
    )
    # The step's weight, even when the write that sets it comes after the step's.
    [step] = what_happened(first, {**first, "currentStep": 1}, steps=(10, 25, 50, 100))
    assert (step.step, step.weight) == (1, 25)
    # The same status written again (a hold, a lost race retried) is no event.
    assert events(first, first) == []
    assert events(first, {**first, "lastAnalysis": {"verdict": "pass"}}) == []


def test_pause_promotion_rollback_and_abort() -> None:
    running = {
        "phase": "Progressing",
        "canaryImage": "app:2",
        "stableImage": "app:1",
        "canaryStartedAt": STARTED,
        "currentStep": 1,
        "canaryWeight": 25,
        "history": [{"image": "app:0", "outcome": "promoted"}],
    }
    assert events(running, {**running, "phase": "Paused"}) == [E.PAUSED]
    assert events({**running, "phase": "Paused"}, running) == []  # resuming is not asked for
    promoted = {"image": "app:2", "outcome": "promoted", "reason": "all steps passed"}
    [event] = what_happened(running, {**running, "history": [*running["history"], promoted]})
    assert (event.event, event.canary_image, event.reason) == (
        E.PROMOTED,
        "app:2",
        "all steps passed",
    )
    rolled = {"image": "app:2", "outcome": "rolledBack", "reason": "3 failed checks"}
    after = {**running, "phase": "RolledBack", "history": [*running["history"], rolled]}
    assert [(h.event, h.reason) for h in what_happened(running, after)] == [
        (E.ROLLED_BACK, "3 failed checks")
    ]
    aborted = {"image": "app:2", "outcome": "aborted", "reason": "abort requested"}
    after = {**running, "history": [*running["history"], aborted]}
    assert [h.reason for h in what_happened(running, after)] == ["aborted: abort requested"]
    superseded = {"image": "app:2", "outcome": "superseded"}
    assert events(running, {**running, "history": [*running["history"], superseded]}) == []


def test_failures_are_the_operators_own_not_a_rollbacks_degraded() -> None:
    def degraded(reason: str, message: str = "m") -> dict[str, Any]:
        condition = {"type": "Degraded", "status": "True", "reason": reason, "message": message}
        return {"phase": "Progressing", "conditions": [condition]}

    ok = {"phase": "Progressing", "conditions": [{"type": "Degraded", "status": "False"}]}
    [failed] = what_happened(ok, degraded("ReconcileFailed", "Service refused"))
    assert (failed.event, failed.reason) == (E.FAILED, "ReconcileFailed: Service refused")
    # Reported again with another message: the same failure, no second notification.
    assert events(degraded("ReconcileFailed"), degraded("ReconcileFailed", "other")) == []
    assert events(ok, degraded("RolledBack")) == []  # the rollback's own event says it


# --- payloads and signatures (pure) ----------------------------------------------------

HAPPENED = Happened(E.STEP_ADVANCED, "app:2", "app:1", 25, 1)


def test_webhook_payload_is_signed_as_standard_webhooks_verifies() -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    body = encode(webhook_payload(HAPPENED, "payments", "pay", NOW))
    timestamp = int(time.time())
    headers = signature_headers(secret, "msg_1", timestamp, body)
    verified = standardwebhooks.Webhook(secret).verify(body, headers)
    assert verified["type"] == "canary.step_advanced"
    assert verified["timestamp"] == "2026-05-01T12:00:00Z"
    assert verified["data"] == {
        "namespace": "payments",
        "name": "pay",
        "event": "StepAdvanced",
        "canaryImage": "app:2",
        "stableImage": "app:1",
        "weight": 25,
        "step": 1,
        "reason": "",
    }
    tampered = body.replace(b'"weight":25', b'"weight":100')
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, headers)


def test_slack_message_reads_as_a_sentence() -> None:
    payload = slack_payload(HAPPENED, "payments", "pay")
    assert payload["text"] == (
        ":arrow_forward: canary of payments/pay at step 2: 25% of traffic to app:2"
    )
    assert payload["blocks"][0]["text"]["text"] == payload["text"]
    rolled = Happened(E.ROLLED_BACK, "app:2", "app:1", 0, -1, "errorRate 0.05 > 0.005")
    assert describe(rolled, "payments", "pay") == (
        "canary of payments/pay rolled back: app:2: errorRate 0.05 > 0.005"
    )


# --- a real HTTP receiver --------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic


@dataclass
class Receiver:
    """An HTTP server on loopback that records every POST; `delay` seconds before answering
    `status` make it a slow or failing receiver."""

    delay: float = 0.0
    status: int = 204
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                got = Received(self.path, dict(self.headers.items()), body, time.monotonic())
                receiver.received.append(got)
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.stop()


def signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def notification_secrets(kube: Any, namespace: str, receiver: Receiver, secret: str) -> None:
    kube.kubectl(
        "create", "secret", "generic", "pay-notify", "-n", namespace,
        f"--from-literal=webhook-url={receiver.url('/hooks/rollouts')}",
        f"--from-literal=slack-url={receiver.url('/services/T000/B000/XXXX')}",
        f"--from-literal=signing={secret}",
    )  # fmt: skip


RECEIVERS = [
    {
        "name": "rollouts",
        "type": "webhook",
        "urlSecret": {"name": "pay-notify", "key": "webhook-url"},
        "signingSecret": {"name": "pay-notify", "key": "signing"},
    },
    {
        "name": "team-channel",
        "type": "slack",
        "urlSecret": {"name": "pay-notify", "key": "slack-url"},
        "events": ["Promoted", "RolledBack", "Failed"],
    },
]


def cad(namespace: str, receivers: list[dict[str, Any]] = RECEIVERS) -> Cad:
    return Cad.from_body(
        {
            "metadata": {"name": "pay", "namespace": namespace, "uid": "u"},
            "spec": {"image": "app:2", "canary": {"notifications": receivers}},
        }
    )


async def until(what: str, check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll without blocking the event loop (the notifier's workers run on it)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def counted(kind: str, event: str, outcome: str) -> float:
    return metrics.notifications.labels(kind, event, outcome)._value.get()


@pytest.fixture
async def operator_api(kube_cluster: Any, namespace: str, cad_crd: Any) -> AsyncIterator[KubeApi]:
    """The operator's client, as its ServiceAccount bound to its least-privilege Role."""
    api = KubeApi.connect(str(operator_kubeconfig(kube_cluster, namespace)))
    try:
        yield api
    finally:
        await api.close()


@pytest.mark.cluster
async def test_signed_webhook_and_slack_message_reach_a_real_receiver(
    kube_cluster: Any, namespace: str, operator_api: KubeApi, receiver: Receiver
) -> None:
    secret = signing_secret()
    notification_secrets(kube_cluster, namespace, receiver, secret)
    notifier = Notifier(operator_api)
    notifier.start()
    try:
        promoted = Happened(E.PROMOTED, "app:2", "app:1", 0, -1, "all steps passed")
        started = time.monotonic()
        assert notifier.submit(cad(namespace), [HAPPENED, promoted], NOW) == 3
        await until("three notifications", lambda: len(receiver.received) == 3)
    finally:
        await notifier.stop()
    hooks = receiver.on("/hooks/rollouts")
    verified = [standardwebhooks.Webhook(secret).verify(h.body, h.headers) for h in hooks]
    assert sorted(v["type"] for v in verified) == ["canary.promoted", "canary.step_advanced"]
    assert all(h.headers["content-type"] == "application/json" for h in hooks)
    [slack] = receiver.on("/services/T000/B000/XXXX")  # only the events it asked for
    assert json.loads(slack.body)["text"] == (
        ":white_check_mark: canary of "
        f"{namespace}/pay promoted: app:2 is the stable version: all steps passed"
    )
    latency = max(r.at for r in receiver.received) - started
    print(f"3 notifications received {latency * 1000:.0f} ms after they were queued")


@pytest.mark.cluster
async def test_a_slow_receiver_costs_the_rollout_nothing_and_a_full_queue_drops(
    kube_cluster: Any, namespace: str, operator_api: KubeApi
) -> None:
    slow = Receiver(delay=3.0)
    try:
        notification_secrets(kube_cluster, namespace, slow, signing_secret())
        hook = [RECEIVERS[0]]
        notifier = Notifier(operator_api, queue_size=2, workers=1, timeout=0.5)
        dropped = counted("webhook", "StepAdvanced", "dropped")
        failed = counted("webhook", "StepAdvanced", "failed")
        # Before the workers run, the queue takes 2 and drops the rest at once.
        started = time.perf_counter()
        queued = notifier.submit(cad(namespace, hook), [HAPPENED] * 5, NOW)
        submit_ms = (time.perf_counter() - started) * 1000
        assert queued == 2
        assert counted("webhook", "StepAdvanced", "dropped") - dropped == 3
        notifier.start()
        # Each attempt gives up after the 0.5 s timeout: failed, not retried for ever.
        await until(
            "both attempts to time out",
            lambda: counted("webhook", "StepAdvanced", "failed") - failed == 2,
        )
        await notifier.stop()
        assert len(slow.received) == 2
        print(f"5 events submitted to a 3 s receiver in {submit_ms:.2f} ms (2 queued, 3 dropped)")
    finally:
        slow.stop()


@pytest.mark.cluster
async def test_a_missing_url_secret_fails_that_delivery_only(
    namespace: str, operator_api: KubeApi, receiver: Receiver, kube_cluster: Any
) -> None:
    notification_secrets(kube_cluster, namespace, receiver, signing_secret())
    broken = {**RECEIVERS[1], "name": "gone", "urlSecret": {"name": "nope", "key": "url"}}
    notifier = Notifier(operator_api)
    failed = counted("slack", "Promoted", "failed")
    notifier.start()
    try:
        promoted = Happened(E.PROMOTED, "app:2", "app:1", 0, -1)
        notifier.submit(cad(namespace, [broken, RECEIVERS[1]]), [promoted], NOW)
        await until("the good receiver's message", lambda: len(receiver.received) == 1)
        await until(
            "the broken one counted as failed",
            lambda: counted("slack", "Promoted", "failed") - failed == 1,
        )
    finally:
        await notifier.stop()


@pytest.mark.cluster
async def test_a_status_write_notifies_through_the_installed_notifier(
    kube_cluster: Any, namespace: str, operator_api: KubeApi, receiver: Receiver
) -> None:
    """The integration point: status.write_status, whoever calls it."""
    secret = signing_secret()
    notification_secrets(kube_cluster, namespace, receiver, secret)
    body = {
        "apiVersion": "cricalgo.io/v1alpha1",
        "kind": "CricAlgoDeployment",
        "metadata": {"name": "pay", "namespace": namespace},
        "spec": {
            "image": "registry.local/cricalgo:2.0.0",
            "database": {"secretRef": {"name": "db"}},
            "redis": {"secretRef": {"name": "redis"}},
            "canary": {"notifications": RECEIVERS},
        },
    }
    kube_cluster.kubectl("create", "-f", "-", input=json.dumps(body))  # as the CR's author
    created = await operator_api.get("cricalgo.io/v1alpha1", "CricAlgoDeployment", namespace, "pay")
    assert created is not None
    notifier = Notifier(operator_api)
    notifier.start()
    notifications.install(notifier)
    try:
        patch = {"phase": "Paused", "canaryImage": "registry.local/cricalgo:2.0.0"}
        await write_status(operator_api, Cad.from_body(created), patch, now=NOW)
        await until("the paused notification", lambda: len(receiver.received) == 1)
    finally:
        notifications.install(None)
        await notifier.stop()
    [hook] = receiver.received
    payload = standardwebhooks.Webhook(secret).verify(hook.body, hook.headers)
    assert payload["type"] == "canary.paused"
    assert payload["data"]["canaryImage"] == "registry.local/cricalgo:2.0.0"


# --- from a canary the operator runs ---------------------------------------------------


@pytest.fixture
def canary_with_receiver(
    kube_cluster: Any, namespace: str, prometheus_server: Any, tmp_path: Path, cad_crd: Any
) -> Iterator[tuple[Canary, Receiver]]:
    operator = OperatorProcess(operator_kubeconfig(kube_cluster, namespace), namespace, tmp_path)
    operator.start()
    env = Canary(kube_cluster, namespace, prometheus_server, operator)
    server = Receiver()
    try:
        yield env, server
    finally:
        server.stop()
        operator.stop()
        for job, exporter in env.exporters.items():
            prometheus_server.set_targets(job, [])
            exporter.stop()
        print((tmp_path / "operator-1.log").read_text()[-3000:])


@pytest.mark.cluster
@pytest.mark.slow
def test_a_promoted_canary_tells_every_step_to_the_receivers(
    canary_with_receiver: tuple[Canary, Receiver], kube_cluster: Any, namespace: str
) -> None:
    env, receiver = canary_with_receiver
    secret = signing_secret()
    notification_secrets(kube_cluster, namespace, receiver, secret)
    healthy(env, V2)
    env.stable_first(notifications=RECEIVERS)
    env.set_image(V2)
    env.wait("promotion", lambda s: s.get("phase") == "Promoting")
    wait_for(
        "the promotion's notifications",
        lambda: (
            len(receiver.on("/services/T000/B000/XXXX")) == 1
            and any(b'"canary.promoted"' in h.body for h in receiver.on("/hooks/rollouts"))
        ),
        timeout=15,
    )
    hooks = receiver.on("/hooks/rollouts")
    payloads = [standardwebhooks.Webhook(secret).verify(h.body, h.headers) for h in hooks]
    kinds = [p["type"] for p in payloads]
    assert kinds == [
        "canary.started",
        *["canary.step_advanced"] * 4,
        "canary.promoted",
    ], kinds
    assert [p["data"]["weight"] for p in payloads if p["type"] == "canary.step_advanced"] == [
        10,
        25,
        50,
        100,
    ]
    assert {p["data"]["canaryImage"] for p in payloads} == {IMAGE.format(V2)}
    [slack] = receiver.on("/services/T000/B000/XXXX")
    assert "promoted" in json.loads(slack.body)["text"]


@pytest.mark.cluster
@pytest.mark.slow
def test_a_rolled_back_canary_tells_the_receivers_why(
    canary_with_receiver: tuple[Canary, Receiver], kube_cluster: Any, namespace: str
) -> None:
    env, receiver = canary_with_receiver
    secret = signing_secret()
    notification_secrets(kube_cluster, namespace, receiver, secret)
    env.play("stable", V1)
    env.play("canary", V2, errors=50)
    env.stable_first(notifications=RECEIVERS, stepDuration="30s")
    env.set_image(V2)
    status = env.wait("rollback", lambda s: s.get("phase") == "RolledBack")
    wait_for(
        "the rollback's notifications",
        lambda: (
            len(receiver.on("/services/T000/B000/XXXX")) == 1
            and any(b'"canary.rolled_back"' in h.body for h in receiver.on("/hooks/rollouts"))
        ),
        timeout=15,
    )
    hooks = receiver.on("/hooks/rollouts")
    payloads = [standardwebhooks.Webhook(secret).verify(h.body, h.headers) for h in hooks]
    assert [p["type"] for p in payloads] == [
        "canary.started",
        "canary.step_advanced",
        "canary.rolled_back",
    ]
    rolled = payloads[-1]["data"]
    assert rolled["canaryImage"] == IMAGE.format(V2)
    assert rolled["reason"] == status["history"][-1]["reason"]
    [slack] = receiver.on("/services/T000/B000/XXXX")
    assert json.loads(slack.body)["text"].startswith(
        f":rewind: canary of {namespace}/pay rolled back: {IMAGE.format(V2)}: "
    )
