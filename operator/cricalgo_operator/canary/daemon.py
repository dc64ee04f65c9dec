"""The Kopf daemon that runs the canary analysis of each CR at its `analysisInterval`.

Importing this module registers the daemon (the operator's entry point imports it). One
daemon per CR; it holds no state of its own between ticks (everything is in the CR
status), so an operator restart resumes every canary at the step it was on.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from cricalgo_operator.apply import OwnershipConflict
from cricalgo_operator.canary.controls import ANNOTATION_OF
from cricalgo_operator.canary.engine import IMMEDIATE_ROLLBACKS
from cricalgo_operator.canary.model import CanaryStatus, Phase
from cricalgo_operator.canary.prometheus_policy import PrometheusPolicy
from cricalgo_operator.canary.runner import tick
from cricalgo_operator.failures import ANALYSIS_FAILED, report_failure
from cricalgo_operator.kubeapi import ApiError, KubeApi, TransportError
from cricalgo_operator.naming import GROUP, PLURAL, VERSION

# After a lost write race (409) the next tick comes sooner than a whole interval.
CONFLICT_RETRY_SECONDS = 1.0
WAKE_CHECK_SECONDS = 1.0
ERROR_RETRY_SECONDS = 5.0
# Fail-fast probes between ticks: a severe fault should not wait for the next interval.
# They only ever roll back, so their cadence does not change what a step or a counted
# failure means; the floor keeps a seconds-long test interval from hammering Prometheus.
PROBES_PER_INTERVAL = 4
MIN_PROBE_SECONDS = 0.5


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
    """Tick until the CR is deleted or the operator stops.

    Ticks are at least the operator's `--min-analysis-interval` apart, whatever the CR's
    analysisInterval: a CR cannot make its daemon hammer the API server and Prometheus.
    """
    assert namespace is not None  # the CRD is namespaced
    config = memo.get("config")
    default_url = PrometheusPolicy.of_config(config)
    floor = float(getattr(config, "min_analysis_interval", 0.0))
    previous = None
    # After a tick that failed half-way (its status written, its children maybe not), the
    # next one applies every child rather than only those its own decision changes.
    resync = False
    while not stopped:
        started = time.monotonic()
        try:
            result = await tick(
                memo.api, namespace, name, _now(), default_url, previous, resync=resync
            )
            resync = False
        except ApiError as error:
            resync = resync or error.status != 409  # a 409 is lost before anything is applied
            delay = CONFLICT_RETRY_SECONDS if error.status == 409 else ERROR_RETRY_SECONDS
            if error.status == 409:
                logger.debug(f"canary analysis lost a write race; deciding again: {error}")
            else:
                logger.warning(f"canary analysis failed: {error}")
            await stopped.wait(delay)
            continue
        except TransportError as error:  # the API server is unreachable or slow
            resync = True
            logger.warning(f"canary analysis failed: API server unreachable: {error!r}")
            await stopped.wait(ERROR_RETRY_SECONDS)
            continue
        except OwnershipConflict as error:  # reported on the CR by the reconciler
            logger.warning(f"canary analysis waits: {error}")
            await stopped.wait(ERROR_RETRY_SECONDS * 6)
            continue
        except ValueError as error:  # an unparsable spec the CRD let through
            logger.error(f"canary analysis cannot run: {error}")
            message = f"canary analysis cannot run: {error}"
            await report_failure(memo.api, namespace, name, ANALYSIS_FAILED, message, _now())
            await stopped.wait(ERROR_RETRY_SECONDS * 6)
            continue
        if result is None:
            return
        previous = result.decision
        probe = None
        if is_analysed(result.decision.status):

            async def probe() -> bool:
                return await fail_fast_probe(memo.api, namespace, name, default_url, logger)

        # Ticks keep their cadence: the next is due one interval after this one began, so
        # maxFailedChecks ticks span (maxFailedChecks - 1) intervals, not that plus each
        # tick's own queries and writes.
        interval = max(result.interval, floor)
        left = interval - (time.monotonic() - started)
        await until_next_tick(stopped, meta, left, probe, probe_period(interval))


def is_analysed(status: CanaryStatus) -> bool:
    """A canary with traffic and readings: the one a fail-fast probe watches."""
    return status.phase == Phase.PROGRESSING and status.current_step >= 0


def probe_period(interval: float) -> float:
    """Seconds between fail-fast probes within an analysis interval."""
    return max(MIN_PROBE_SECONDS, interval / PROBES_PER_INTERVAL)


async def fail_fast_probe(
    api: KubeApi,
    namespace: str,
    name: str,
    default_url: PrometheusPolicy | str | None,
    logger: kopf.Logger,
) -> bool:
    """Read and judge between ticks; roll back if a reading is beyond failFastFactor x its
    threshold or a sequential test reached its rollback boundary. True if it did. Errors
    are left to the next tick."""
    try:
        result = await tick(api, namespace, name, _now(), default_url, fail_fast_only=True)
    except (ApiError, TransportError, ValueError) as error:
        logger.debug(f"fail-fast probe skipped: {error!r}")
        return False
    return result is not None and result.decision.reason in IMMEDIATE_ROLLBACKS


async def until_next_tick(
    stopped: kopf.DaemonStopped,
    meta: Mapping[str, Any],
    seconds: float,
    probe: Callable[[], Awaitable[bool]] | None = None,
    period: float = MIN_PROBE_SECONDS,
) -> None:
    """Sleep `seconds`, but wake within a second when the spec changes (pause, new image)
    or a control request arrives, so a manual abort does not wait a whole interval.

    With `probe` (a running canary), call it every `period` seconds and return at once
    when it acted: a severe fault is rolled back within a fraction of an interval.

    `meta` is Kopf's live view of the CR's metadata: checking it costs no API call.
    """
    generation = meta.get("generation")
    started = time.monotonic()
    deadline = started + seconds
    next_probe = started + period
    while not stopped:
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            return
        # No probe in the last half period: the tick itself is about to judge.
        probing = probe is not None and next_probe < deadline - period / 2
        if probing and next_probe <= now:
            assert probe is not None
            if await probe():
                return
            next_probe = time.monotonic() + period
            continue
        wake = min(WAKE_CHECK_SECONDS, left)
        if probing:
            wake = min(wake, next_probe - now)
        await stopped.wait(wake)
        annotations = meta.get("annotations") or {}
        if meta.get("generation") != generation:
            return
        if any(key in annotations for key in ANNOTATION_OF.values()):
            return
