"""Delivery off the rollout's path: a bounded queue, a few workers, one short attempt each.

`notify` is called at every status write (status.write_status) and never waits: it works
out what happened (events.what_happened), and puts one delivery per matching receiver on
the queue, or drops it with a warning and a metric when the queue is full. Workers read the
receiver's URL (and signing secret) from its Secret, post, and record the outcome. A slow
or failing receiver therefore costs the rollout nothing; at worst its notifications are
late (timeout) or dropped (queue full), and `cricalgo_operator_notifications_total` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from cricalgo_operator import metrics
from cricalgo_operator.kubeapi import ApiError, KubeApi, TransportError
from cricalgo_operator.model import Cad
from cricalgo_operator.notifications.events import ALL_EVENTS, Happened, what_happened
from cricalgo_operator.notifications.payloads import (
    SigningSecretError,
    encode,
    signature_headers,
    slack_payload,
    webhook_payload,
)
from cricalgo_operator.secret_refs import SecretKey, SecretRefError, read_value

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
WORKERS = 4
TIMEOUT_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 0.5


@dataclass(frozen=True)
class Delivery:
    """One event for one receiver."""

    namespace: str
    name: str
    receiver: Mapping[str, Any]  # an item of spec.canary.notifications
    happened: Happened
    moment: datetime.datetime
    message_id: str  # the same for every attempt, so receivers can drop duplicates
    queued_at: float  # monotonic


def receivers_for(spec: Mapping[str, Any], happened: Happened) -> list[Mapping[str, Any]]:
    """The receivers of `spec.canary.notifications` that want this event (pure)."""
    wanted = []
    for receiver in (spec.get("canary") or {}).get("notifications") or []:
        events = receiver.get("events") or ALL_EVENTS
        if str(happened.event) in events:
            wanted.append(receiver)
    return wanted


class Notifier:
    """The operator's one delivery queue and its workers."""

    def __init__(
        self,
        api: KubeApi,
        *,
        queue_size: int = QUEUE_SIZE,
        workers: int = WORKERS,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.api = api
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self.workers = workers
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.client.aclose()

    def submit(self, cad: Cad, happened: list[Happened], moment: datetime.datetime) -> int:
        """Queue a delivery per event and receiver; never blocks. Returns how many queued."""
        queued = 0
        for event in happened:
            for receiver in receivers_for(cad.spec, event):
                delivery = Delivery(
                    cad.namespace,
                    cad.name,
                    receiver,
                    event,
                    moment,
                    f"msg_{uuid.uuid4().hex}",
                    time.monotonic(),
                )
                try:
                    self.queue.put_nowait(delivery)
                except asyncio.QueueFull:
                    kind = str(receiver.get("type"))
                    metrics.notifications.labels(kind, str(event.event), "dropped").inc()
                    log.warning(
                        "notification %s of %s/%s to %s dropped: the queue is full (%d)",
                        event.event,
                        cad.namespace,
                        cad.name,
                        receiver.get("name"),
                        self.queue.maxsize,
                    )
                    continue
                queued += 1
        return queued

    async def _work(self) -> None:
        while True:
            delivery = await self.queue.get()
            try:
                await self.deliver(delivery)
            finally:
                self.queue.task_done()

    async def deliver(self, delivery: Delivery) -> bool:
        """One attempt; the outcome is logged and counted, never raised."""
        receiver = delivery.receiver
        kind = str(receiver.get("type"))
        event = str(delivery.happened.event)
        where = f"{delivery.namespace}/{delivery.name} to {receiver.get('name')}"
        try:
            url, headers, body = await self._request(delivery)
            response = await self._post(url, headers, body)
        except (SecretRefError, SigningSecretError, ValueError) as error:
            outcome, detail = "failed", str(error)
        except (httpx.HTTPError, ApiError, TransportError, OSError) as error:
            # The URL is a credential (Slack's carry a token): the error's class, not its text.
            outcome, detail = "failed", type(error).__name__
        else:
            ok = 200 <= response.status_code < 300
            outcome, detail = ("sent" if ok else "failed"), f"HTTP {response.status_code}"
        metrics.notifications.labels(kind, event, outcome).inc()
        if outcome == "sent":
            elapsed = time.monotonic() - delivery.queued_at
            metrics.notification_delivery.labels(kind).observe(elapsed)
            log.info("notification %s of %s: %s", event, where, detail)
        else:
            log.warning("notification %s of %s failed: %s", event, where, detail)
        return outcome == "sent"

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        """One retry, after a pause, when the connection could not be made (a receiver
        restarting); never after a request was sent, which the receiver may have taken."""
        try:
            return await self.client.post(url, content=body, headers=headers)
        except httpx.ConnectError:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            return await self.client.post(url, content=body, headers=headers)

    async def _request(self, delivery: Delivery) -> tuple[str, dict[str, str], bytes]:
        receiver, happened = delivery.receiver, delivery.happened
        ref = SecretKey.of(receiver.get("urlSecret"))
        assert ref is not None  # required by the CRD
        url = await read_value(self.api, delivery.namespace, ref)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{ref} is not an http:// or https:// URL")
        headers = {"content-type": "application/json"}
        if receiver.get("type") == "slack":
            return url, headers, encode(slack_payload(happened, delivery.namespace, delivery.name))
        body = encode(webhook_payload(happened, delivery.namespace, delivery.name, delivery.moment))
        signing = SecretKey.of(receiver.get("signingSecret"))
        if signing is not None:
            secret = await read_value(self.api, delivery.namespace, signing)
            timestamp = int(time.time())  # the attempt's, as receivers check its age
            headers |= signature_headers(secret, delivery.message_id, timestamp, body)
        return url, headers, body


_notifier: Notifier | None = None


def install(notifier: Notifier | None) -> None:
    """Make `notifier` the one `notify` feeds (None: notifications off)."""
    global _notifier
    _notifier = notifier


def notify(before: Cad, after: Cad, moment: datetime.datetime) -> None:
    """Queue the notifications a status write calls for. Never raises, never waits: a
    problem here must not fail the write that already happened."""
    canary = after.spec.get("canary") or {}
    if _notifier is None or not canary.get("notifications"):
        return
    try:
        happened = what_happened(before.status, after.status, canary.get("steps") or ())
        if happened:
            _notifier.submit(after, happened, moment)
    except Exception:  # the rollout goes on whatever a notification does
        log.exception("notifications of %s/%s not queued", after.namespace, after.name)
