"""The canary decision: `decide(config, status, readings, now) -> Decision`.

Pure and deterministic: the same inputs give the same decision, time is a parameter, and
the decision carries the next status, so an operator restarted mid-canary resumes from
the status alone. The runner performs the side effects the decision's action names.

Division of labour with the reconciler (revisions.plan_revision): the reconciler creates,
supersedes and aborts canary tracks when the pod template changes (a new canary starts
at weight 0, `currentStep` -1); this engine walks an existing canary through its steps,
and promotes or rolls it back.
"""

from __future__ import annotations

from datetime import datetime

from cricalgo_operator.canary.judge import judge, tick_verdict
from cricalgo_operator.canary.model import (
    NO_CONTROL,
    Action,
    CanaryConfig,
    CanaryStatus,
    Control,
    Decision,
    Ended,
    MetricVerdict,
    Phase,
    Readings,
    Verdict,
)
from cricalgo_operator.canary.sequential import Outcome

# The hold while the canary's Deployments are not ready yet (weight stays 0).
AWAITING_CANARY_PODS = "AwaitingCanaryPods"
# The rollback on a reading beyond failFastFactor x its threshold.
FAIL_FAST = "FailFast"
# The rollback on a sequential test reaching its rollback boundary.
EVIDENCE_OF_FAULT = "EvidenceOfFault"
# Rollbacks decided on one reading, which the probes between ticks may also act on.
IMMEDIATE_ROLLBACKS = frozenset({FAIL_FAST, EVIDENCE_OF_FAULT})
# The hold at the end of a step while a sequential test has not accepted the canary yet.
AWAITING_EVIDENCE = "AwaitingEvidence"
_EPSILON = 1e-6  # seconds; absorbs float noise in elapsed-time comparisons
_ACTIVE = (Phase.PROGRESSING, Phase.PAUSED)
_NONE: frozenset[str] = frozenset()


def decide(
    config: CanaryConfig,
    status: CanaryStatus,
    readings: Readings,
    now: datetime,
    control: Control = NO_CONTROL,
    canary_ready: bool = True,
) -> Decision:
    """Decide this tick. `control` carries manual requests (promote/abort/retry/resume).

    `canary_ready`: every canary Deployment has all the ready replicas it asks for (from
    the Deployments' status). A router sends the canary its weight whether or not a pod
    stands behind it, so traffic first moves to the canary only once it is ready.
    """
    if status.phase == Phase.PROMOTING:
        return Decision(Action.PROMOTE, "Promoting", "promotion in progress", status)
    if status.phase == Phase.ROLLING_BACK:
        return Decision(Action.ROLLBACK, "RollingBack", "rollback in progress", status)
    if status.phase in _ACTIVE and status.canary_image:
        return _decide_active(config, status, readings, now, control, canary_ready)
    return _decide_idle(config, status, now, control, canary_ready)


def _is_stable(config: CanaryConfig, status: CanaryStatus) -> bool:
    if status.stable_revision:
        return config.revision == status.stable_revision
    return config.image == status.stable_image


def _is_canary(config: CanaryConfig, status: CanaryStatus) -> bool:
    if status.canary_revision:
        return config.revision == status.canary_revision
    return config.image == status.canary_image


def _first_step(config: CanaryConfig, status: CanaryStatus, now: datetime) -> CanaryStatus:
    return status.evolve(
        phase=Phase.PROGRESSING,
        canary_weight=config.steps[0],
        current_step=0,
        step_started_at=now,
        failed_checks=0,
        inconclusive_checks=0,
    )


def _decide_idle(
    config: CanaryConfig, status: CanaryStatus, now: datetime, control: Control, canary_ready: bool
) -> Decision:
    if not status.stable_image:
        message = "the first version is deployed directly"
        return Decision(Action.IDLE, "NoStableVersion", message, status)
    if _is_stable(config, status):
        return Decision(Action.IDLE, "UpToDate", "spec matches the stable version", status)
    if status.phase == Phase.ROLLED_BACK and _is_canary(config, status):
        if not control.retry:
            message = f"{status.canary_image} failed its canary; retry to analyse it again"
            return Decision(Action.IDLE, "FailedImage", message, status)
        started = _first_step(config, status, now).evolve(failed_image=None)
        message = f"retry: canary {status.canary_image} restarts at {config.steps[0]}%"
        if not canary_ready:
            # Rolled back means scaled to zero: back to weight 0 until its pods are ready.
            started = canary_created(config, status, now).evolve(failed_image=None)
            message = f"retry: canary {status.canary_image} scales up; traffic follows when ready"
        return Decision(Action.START, "Retry", message, started, consumed=frozenset({"retry"}))
    message = "a new revision waits for the reconciler to create its canary track"
    return Decision(Action.IDLE, "AwaitingCanary", message, status)


def _rollback(
    status: CanaryStatus,
    reason: str,
    message: str,
    outcome: str = "rolledBack",
    verdicts: tuple[MetricVerdict, ...] = (),
    tick: Verdict | None = None,
    consumed: frozenset[str] = _NONE,
) -> Decision:
    """Weight 0 at once; the image is remembered so re-applying it needs a retry."""
    assert status.canary_image is not None
    rolled = status.evolve(
        phase=Phase.ROLLED_BACK, canary_weight=0, failed_image=status.canary_image
    )
    ended = Ended(status.canary_image, outcome, reason)
    return Decision(Action.ROLLBACK, reason, message, rolled, verdicts, tick, ended, consumed)


def _promote(
    status: CanaryStatus,
    reason: str,
    message: str,
    verdicts: tuple[MetricVerdict, ...] = (),
    tick: Verdict | None = None,
    consumed: frozenset[str] = _NONE,
) -> Decision:
    """Stable takes the canary's version; the canary keeps its weight until stable is ready."""
    assert status.canary_image is not None
    promoting = status.evolve(
        phase=Phase.PROMOTING,
        stable_image=status.canary_image,
        stable_revision=status.canary_revision,
    )
    ended = Ended(status.canary_image, "promoted", reason)
    return Decision(Action.PROMOTE, reason, message, promoting, verdicts, tick, ended, consumed)


def _advance(
    config: CanaryConfig,
    status: CanaryStatus,
    now: datetime,
    reason: str,
    verdicts: tuple[MetricVerdict, ...] = (),
    tick: Verdict | None = None,
    consumed: frozenset[str] = _NONE,
) -> Decision:
    """Next step, or promotion after the last one."""
    step = min(status.current_step, len(config.steps) - 1)
    if step + 1 >= len(config.steps):
        message = f"all steps passed; promoting {status.canary_image}"
        if reason != "StepPassed":
            message = f"promoted by user: {status.canary_image}"
        promote_reason = "Promoted" if reason == "StepPassed" else reason
        return _promote(status, promote_reason, message, verdicts, tick, consumed)
    weight = config.steps[step + 1]
    nxt = status.evolve(
        phase=Phase.PROGRESSING,
        current_step=step + 1,
        canary_weight=weight,
        step_started_at=now,
        inconclusive_checks=0,
    )
    message = f"step {step + 1}: canary weight {weight}%"
    return Decision(Action.ADVANCE, reason, message, nxt, verdicts, tick, None, consumed)


def _decide_active(
    config: CanaryConfig,
    status: CanaryStatus,
    readings: Readings,
    now: datetime,
    control: Control,
    canary_ready: bool,
) -> Decision:
    assert status.canary_image is not None
    if not _is_canary(config, status):
        # The reconciler supersedes (new revision) or aborts (back to stable) the canary.
        message = "the spec changed; waiting for the reconciler to replace the canary"
        return Decision(Action.HOLD, "AwaitingReconcile", message, status)
    if control.abort:
        return _rollback(
            status, "Aborted", "aborted by user", "aborted", consumed=frozenset({"abort"})
        )
    if control.promote == "full":
        message = f"promoted by user: {status.canary_image}"
        return _promote(status, "ManualPromotion", message, consumed=frozenset({"promote"}))
    refused = status.canary_image == status.failed_image and not control.retry
    if status.current_step < 0 and refused:
        # Re-applied after another version: still needs an explicit retry.
        message = f"{status.canary_image} failed its canary before; retry to analyse it"
        return _rollback(status, "FailedImage", message)
    if config.paused:
        paused = status.evolve(phase=Phase.PAUSED)
        if status.phase != Phase.PAUSED:
            return Decision(Action.PAUSE, "PausedByUser", "paused by user", paused)
        return Decision(Action.HOLD, "Paused", "paused", paused)
    if status.phase == Phase.PAUSED:
        stuck = status.inconclusive_checks >= config.max_inconclusive
        if stuck and not (control.resume or control.promote == "step"):
            message = "paused after inconclusive analysis; resume or promote to continue"
            return Decision(Action.HOLD, "PausedNoData", message, status)
        resumed = status.evolve(phase=Phase.PROGRESSING, inconclusive_checks=0, step_started_at=now)
        if control.promote == "step" and resumed.current_step >= 0:
            return _advance(config, resumed, now, "ManualStep", consumed=frozenset({"promote"}))
        consumed = frozenset({"resume"}) if control.resume else _NONE
        return Decision(Action.RESUME, "Resumed", "analysis resumed", resumed, consumed=consumed)
    if status.current_step < 0:
        if not canary_ready:
            message = f"canary {status.canary_image} gets traffic once its pods are ready"
            return Decision(Action.HOLD, AWAITING_CANARY_PODS, message, status)
        started = _first_step(config, status, now)
        if status.canary_image == status.failed_image:
            started = started.evolve(failed_image=None)
        consumed = frozenset({"retry"}) if control.retry else _NONE
        message = f"canary {status.canary_image} at {config.steps[0]}%"
        return Decision(Action.START, "CanaryStarted", message, started, consumed=consumed)
    if control.promote == "step":
        return _advance(config, status, now, "ManualStep", consumed=frozenset({"promote"}))
    return _analyse(config, status, readings, now)


def _analyse(
    config: CanaryConfig, status: CanaryStatus, readings: Readings, now: datetime
) -> Decision:
    # Normalise: the weight always follows the (possibly edited) step list.
    step = min(status.current_step, len(config.steps) - 1)
    status = status.evolve(current_step=step, canary_weight=config.steps[step])
    if status.step_started_at is None:
        status = status.evolve(step_started_at=now)
    verdicts = judge(config, readings)
    tick = tick_verdict(verdicts)

    failing = [v for v in verdicts if v.verdict == Verdict.FAIL]
    severe = [v for v in failing if v.severe]
    if severe:
        what = "; ".join(f"{v.name} {v.reason}" for v in severe)
        message = f"fail fast (beyond {config.fail_fast_factor:g}x its threshold): {what}"
        return _rollback(status, FAIL_FAST, message, verdicts=verdicts, tick=tick)
    proven = [v for v in failing if v.evidence and v.evidence.result.outcome == Outcome.FAULT]
    if proven:
        what = "; ".join(f"{v.name} {v.reason}" for v in proven)
        message = f"sequential test: evidence of a fault: {what}"
        return _rollback(status, EVIDENCE_OF_FAULT, message, verdicts=verdicts, tick=tick)
    if tick == Verdict.FAIL or (tick == Verdict.NODATA and config.on_no_data == "fail"):
        failed = status.failed_checks + 1
        counted = status.evolve(failed_checks=failed, inconclusive_checks=0)
        bad = failing or [v for v in verdicts if v.verdict == Verdict.NODATA]
        what = "; ".join(f"{v.name} {v.reason}" for v in bad)
        if failed >= config.max_failed_checks:
            message = f"{failed} failed checks (max {config.max_failed_checks}): {what}"
            return _rollback(counted, "FailedChecks", message, verdicts=verdicts, tick=tick)
        message = f"check failed ({failed}/{config.max_failed_checks}): {what}"
        return Decision(Action.HOLD, "CheckFailed", message, counted, verdicts, tick)
    if tick == Verdict.NODATA:
        count = status.inconclusive_checks + 1
        counted = status.evolve(inconclusive_checks=count)
        what = "; ".join(f"{v.name} {v.reason}" for v in verdicts if v.verdict == Verdict.NODATA)
        if count >= config.max_inconclusive:
            message = f"{count} inconclusive checks in a row: {what}"
            paused = counted.evolve(phase=Phase.PAUSED)
            return Decision(Action.PAUSE, "NoData", message, paused, verdicts, tick)
        message = f"no data ({count}/{config.max_inconclusive}): {what}"
        return Decision(Action.HOLD, "Inconclusive", message, counted, verdicts, tick)

    passed = status.evolve(inconclusive_checks=0)
    assert passed.step_started_at is not None
    elapsed = (now - passed.step_started_at).total_seconds()
    undecided = [
        v for v in verdicts if v.evidence and v.evidence.result.outcome == Outcome.UNDECIDED
    ]
    if elapsed + _EPSILON >= config.step_duration and undecided:
        # Time alone does not pass a step: the test must have accepted the canary.
        what = "; ".join(f"{v.name} {v.reason}" for v in undecided)
        message = f"step {step} at {passed.canary_weight}%: awaiting evidence: {what}"
        return Decision(Action.HOLD, AWAITING_EVIDENCE, message, passed, verdicts, tick)
    if elapsed + _EPSILON >= config.step_duration:
        return _advance(config, passed, now, "StepPassed", verdicts, tick)
    message = (
        f"step {step} at {passed.canary_weight}%: {elapsed:.0f}s of {config.step_duration:.0f}s"
    )
    return Decision(Action.HOLD, "StepInProgress", message, passed, verdicts, tick)


def promotion_finished(status: CanaryStatus) -> CanaryStatus:
    """The status once stable runs the canary's version and serves all traffic.

    Mirrors what the reconciler writes (revisions.promotion_done_patch).
    """
    return status.evolve(
        phase=Phase.READY,
        stable_image=status.canary_image,
        stable_revision=status.canary_revision,
        canary_image=None,
        canary_revision=None,
        canary_weight=0,
        current_step=-1,
        step_started_at=None,
        failed_checks=0,
        inconclusive_checks=0,
    )


def canary_created(config: CanaryConfig, status: CanaryStatus, now: datetime) -> CanaryStatus:
    """The status once the reconciler created a canary track for the spec's revision.

    Mirrors revisions.plan_revision: weight 0, before the first step.
    """
    return status.evolve(
        phase=Phase.PAUSED if config.paused else Phase.PROGRESSING,
        canary_image=config.image,
        canary_revision=config.revision,
        canary_weight=0,
        current_step=-1,
        step_started_at=now,
        failed_checks=0,
        inconclusive_checks=0,
    )
