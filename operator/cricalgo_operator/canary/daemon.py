"""The Kopf daemon that runs the canary analysis of each CR at its `analysisInterval`.

Importing this module registers the daemon (the operator's entry point imports it). One
daemon per CR; it holds no state of its own between ticks (everything is in the CR
status), so an operator restart resumes every canary at the step it was on.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import httpx
import kopf

from cricalgo_operator.canary.controls import ANNOTATION_OF
from cricalgo_operator.canary.runner import tick
from cricalgo_operator.kubeapi import ApiError
from cricalgo_operator.naming import GROUP, PLURAL, VERSION

# After a lost write race (409) the next tick comes sooner than a whole interval.
CONFLICT_RETRY_SECONDS = 1.0
WAKE_CHECK_SECONDS = 1.0
ERROR_RETRY_SECONDS = 5.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# Kopf restarts a daemon that raised after `backoff` (60 s by default): a canary whose
# analysis stalls for a minute is a canary that runs unwatched, so restart it sooner.
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    id="canary-analysis",
    backoff=ERROR_RETRY_SECONDS,
    cancellation_timeout=10.0,
)
async def canary_analysis(
    name: str,
    namespace: str | None,
    memo: Any,
    stopped: kopf.DaemonStopped,
    meta: kopf.Meta,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Tick until the CR is deleted or the operator stops."""
    assert namespace is not None  # the CRD is namespaced
    default_url = getattr(memo.get("config"), "prometheus_url", None)
    previous = None
    while not stopped:
        try:
            result = await tick(memo.api, namespace, name, _now(), default_url, previous)
        except ApiError as error:
            delay = CONFLICT_RETRY_SECONDS if error.status == 409 else ERROR_RETRY_SECONDS
            if error.status == 409:
                logger.debug(f"canary analysis lost a write race; deciding again: {error}")
            else:
                logger.warning(f"canary analysis failed: {error}")
            await stopped.wait(delay)
            continue
        except httpx.TransportError as error:  # the API server is unreachable or slow
            logger.warning(f"canary analysis failed: API server unreachable: {error!r}")
            await stopped.wait(ERROR_RETRY_SECONDS)
            continue
        except ValueError as error:  # an unparsable spec the CRD let through
            logger.error(f"canary analysis cannot run: {error}")
            await stopped.wait(ERROR_RETRY_SECONDS * 6)
            continue
        if result is None:
            return
        previous = result.decision
        await until_next_tick(stopped, meta, result.interval)


async def until_next_tick(
    stopped: kopf.DaemonStopped, meta: Mapping[str, Any], seconds: float
) -> None:
    """Sleep `seconds`, but wake within a second when the spec changes (pause, new image)
    or a control request arrives, so a manual abort does not wait a whole interval.

    `meta` is Kopf's live view of the CR's metadata: checking it costs no API call.
    """
    generation = meta.get("generation")
    deadline = time.monotonic() + seconds
    while not stopped:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await stopped.wait(min(WAKE_CHECK_SECONDS, left))
        annotations = meta.get("annotations") or {}
        if meta.get("generation") != generation:
            return
        if any(key in annotations for key in ANNOTATION_OF.values()):
            return
