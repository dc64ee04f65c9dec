"""The canary decision: `decide(config, status, readings, now) -> Decision`.

Pure and deterministic: the same inputs give the same decision, time is a parameter, and
the decision carries the complete next status (phase, weight, step, counters, history,
failed image, promotion bookkeeping, conditions), so an operator restarted mid-canary
resumes from the status alone. The engine is the one owner of that state: the runner
writes the decision's status in one patch and applies the children that change.

The phases of one canary:

    new revision (revisions.revise) -> Progressing <-> Paused
    Progressing -> Promoting -> Ready        (the stable takes over, then the canary goes)
    Progressing | Paused -> RollingBack -> RolledBack   (weight 0, then no canary pod)
    RolledBack -> Progressing                (retry)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from cricalgo_operator.canary.deadlines import (
    PROGRESS_DEADLINE_EXCEEDED,
    pods_overdue,
    step_overdue,
)
from cricalgo_operator.canary.judge import judge, tick_verdict
from cricalgo_operator.canary.migration_gate import (
    MIGRATION_FAILED,
    migration_gate,
    rollback_reason,
)
from cricalgo_operator.canary.model import (
    ALL_READY,
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
    TrackState,
    Verdict,
)
from cricalgo_operator.canary.revisions import CANARY_RESET, is_canary, is_stable, revise
from cricalgo_operator.canary.sequential import Outcome
from cricalgo_operator.canary.state import HISTORY_LIMIT, format_time
from cricalgo_operator.conditions import canary_conditions
from cricalgo_operator.migrations import Migration
from cricalgo_operator.naming import COMPONENTS

# The hold while the canary's Deployments are not ready yet (weight stays 0).
AWAITING_CANARY_PODS = "AwaitingCanaryPods"
# The holds while a promotion or a rollback waits for the Deployments to follow.
AWAITING_STABLE = "AwaitingStable"
AWAITING_CANARY_DRAIN = "AwaitingCanaryDrain"
# The rollback on a reading beyond failFastFactor x its threshold.
FAIL_FAST = "FailFast"
# The rollback on a sequential test reaching its rollback boundary.
EVIDENCE_OF_FAULT = "EvidenceOfFault"
# Rollbacks decided on one reading, which the probes between ticks may also act on.
IMMEDIATE_ROLLBACKS = frozenset({FAIL_FAST, EVIDENCE_OF_FAULT})
# The hold at the end of a step while a sequential test has not accepted the canary yet.
AWAITING_EVIDENCE = "AwaitingEvidence"
_EPSILON = 1e-6  # seconds; absorbs float noise in elapsed-time comparisons
# Decisions whose reason says why a running canary holds or goes back (Progressing).
_EXPLAINED = (Action.HOLD, Action.ROLLBACK)
# Holds that follow a promotion or a rollback: the condition keeps saying why that began
# (and a repeated hold writes nothing).
_FOLLOWING = (AWAITING_STABLE, AWAITING_CANARY_DRAIN)
_ACTIVE = (Phase.PROGRESSING, Phase.PAUSED)
_NONE: frozenset[str] = frozenset()


def decide(
    config: CanaryConfig,
    status: CanaryStatus,
    readings: Readings,
    now: datetime,
    control: Control = NO_CONTROL,
    canary_ready: bool = True,
    tracks: TrackState = ALL_READY,
    migration: Migration | None = None,
) -> Decision:
    """Decide this tick. `control` carries manual requests (promote/abort/retry/resume).

    `canary_ready`: every canary Deployment has all the ready replicas it asks for (from
    the Deployments' status). A router sends the canary its weight whether or not a pod
    stands behind it, so traffic first moves to the canary only once it is ready.
    `tracks`: the rest of what the Deployments say (promotion and rollback progress).
    `migration`: the canary's migration Job, while one gates it (migration_gate.py).
    """
    if not canary_ready:
        tracks = replace(tracks, canary_ready=False)
    decision = revise(config, status, now) or _decide(
        config, status, readings, now, control, tracks, migration
    )
    return complete(config, status, decision, now)


def complete(
    config: CanaryConfig, before: CanaryStatus, decision: Decision, now: datetime
) -> Decision:
    """The decision with the status parts every transition shares: the history entry of
    a canary that ended, the last analysis, and the conditions of the next phase."""
    status = decision.status
    if decision.ended is not None:
        entry = decision.ended.entry(before.canary_started_at, now)
        status = status.evolve(history=(*status.history, entry)[-HISTORY_LIMIT:])
    if decision.tick is not None:
        status = status.evolve(
            last_analysis={
                "time": format_time(now),
                "verdict": str(decision.tick),
                "metrics": [v.to_dict() for v in decision.verdicts],
            }
        )
    # A failure of the operator's own work (failures.py) stays reported: only a reconcile
    # that succeeds clears it.
    why = _why(status, decision)
    conditions = canary_conditions(
        status.conditions,
        status.to_dict(),
        now,
        config.generation,
        config.image,
        keep_failure=True,
        why=why,
    )
    if [dict(c) for c in status.conditions] != conditions:
        status = status.evolve(conditions=tuple(conditions))
    return replace(decision, status=status)


def _why(status: CanaryStatus, decision: Decision) -> tuple[str, str] | None:
    """The Progressing condition's reason and message for this decision (None: the phase)."""
    if decision.reason in _FOLLOWING:
        current = next((c for c in status.conditions if c.get("type") == "Progressing"), None)
        if current is not None and current.get("status") == "True":
            return str(current.get("reason")), str(current.get("message"))
        return None
    if decision.action in _EXPLAINED:
        return decision.reason, decision.message
    return None


def _decide(
    config: CanaryConfig,
    status: CanaryStatus,
    readings: Readings,
    now: datetime,
    control: Control,
    tracks: TrackState,
    migration: Migration | None = None,
) -> Decision:
    if status.phase == Phase.PROMOTING:
        return _finish_promotion(status, tracks)
    if status.phase == Phase.ROLLING_BACK:
        return _finish_rollback(status, tracks)
    if status.phase in _ACTIVE and status.canary_image:
        return _decide_active(config, status, readings, now, control, tracks, migration)
    return _decide_idle(config, status, now, control, tracks.canary_ready)


def _finish_promotion(status: CanaryStatus, tracks: TrackState) -> Decision:
    """The canary keeps its weight until the stable serves at the size it had; then the
    traffic comes back to the stable and the canary track goes."""
    if not tracks.stable_promoted:
        message = f"promoting {status.canary_image}: waiting for the stable to be available"
        return Decision(Action.HOLD, AWAITING_STABLE, message, status)
    done = status.evolve(
        **CANARY_RESET, phase=Phase.READY, promotion_reason=None, promotion_replicas=None
    )
    image = status.canary_image or status.stable_image or ""
    ended = Ended(image, "promoted", status.promotion_reason or "promoted")
    return Decision(Action.PROMOTED, "Promoted", f"{image} is stable", done, ended=ended)


def _finish_rollback(status: CanaryStatus, tracks: TrackState) -> Decision:
    """The traffic left the canary at once; rolled back once its last pod is gone."""
    if not tracks.canary_drained:
        message = f"rolling back {status.canary_image}: waiting for its pods to stop"
        return Decision(Action.HOLD, AWAITING_CANARY_DRAIN, message, status)
    done = status.evolve(phase=Phase.ROLLED_BACK)
    message = f"{status.canary_image} rolled back: no canary pod left"
    return Decision(Action.ROLLED_BACK, "CanaryScaledDown", message, done)


def _first_step(config: CanaryConfig, status: CanaryStatus, now: datetime) -> CanaryStatus:
    return status.evolve(
        phase=Phase.PROGRESSING,
        canary_weight=config.steps[0],
        current_step=0,
        step_started_at=now,
        failed_checks=0,
        inconclusive_checks=0,
    )


def _at_weight_zero(config: CanaryConfig, status: CanaryStatus, now: datetime) -> CanaryStatus:
    """A canary track that exists but waits for its pods: weight 0, before the first step."""
    return status.evolve(
        phase=Phase.PAUSED if config.paused else Phase.PROGRESSING,
        canary_weight=0,
        current_step=-1,
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
    if is_stable(config, status):
        return Decision(Action.IDLE, "UpToDate", "spec matches the stable version", status)
    if status.phase == Phase.ROLLED_BACK and is_canary(config, status):
        if not control.retry:
            message = f"{status.canary_image} failed its canary; retry to analyse it again"
            return Decision(Action.IDLE, "FailedImage", message, status)
        started = _first_step(config, status, now).evolve(failed_image=None)
        message = f"retry: canary {status.canary_image} restarts at {config.steps[0]}%"
        if not canary_ready:
            # Rolled back means scaled to zero: back to weight 0 until its pods are ready.
            started = _at_weight_zero(config, status, now).evolve(failed_image=None)
            message = f"retry: canary {status.canary_image} scales up; traffic follows when ready"
        return Decision(Action.START, "Retry", message, started, consumed=frozenset({"retry"}))
    message = f"{status.phase}: nothing to decide for {config.image}"
    return Decision(Action.IDLE, "Idle", message, status)


def _rollback(
    status: CanaryStatus,
    reason: str,
    message: str,
    outcome: str = "rolledBack",
    verdicts: tuple[MetricVerdict, ...] = (),
    tick: Verdict | None = None,
    consumed: frozenset[str] = _NONE,
) -> Decision:
    """Weight 0 at once and the canary scaled to zero (RollingBack until its pods are
    gone); the image is remembered so re-applying it needs a retry."""
    assert status.canary_image is not None
    rolled = status.evolve(
        phase=Phase.ROLLING_BACK, canary_weight=0, failed_image=status.canary_image
    )
    ended = Ended(status.canary_image, outcome, message)
    return Decision(
        Action.ROLLBACK, reason, message, rolled, verdicts, tick, ended, consumed, warning=True
    )


def _promote(
    config: CanaryConfig,
    status: CanaryStatus,
    reason: str,
    message: str,
    verdicts: tuple[MetricVerdict, ...] = (),
    tick: Verdict | None = None,
    consumed: frozenset[str] = _NONE,
    serving: Mapping[str, int] | None = None,
) -> Decision:
    """Stable takes the canary's version, scaled to at least the replicas serving now (both
    tracks); the canary keeps its weight until the stable is available at that size."""
    assert status.canary_image is not None
    promoting = status.evolve(
        phase=Phase.PROMOTING,
        stable_image=status.canary_image,
        stable_revision=status.canary_revision,
        stable_spec=dict(config.pod_inputs),
        promotion_reason=message,
        promotion_replicas={c: int((serving or {}).get(c, 0)) for c in COMPONENTS},
    )
    return Decision(Action.PROMOTE, reason, message, promoting, verdicts, tick, None, consumed)


def _advance(
    config: CanaryConfig,
    status: CanaryStatus,
    now: datetime,
    reason: str,
    verdicts: tuple[MetricVerdict, ...] = (),
    tick: Verdict | None = None,
    consumed: frozenset[str] = _NONE,
    serving: Mapping[str, int] | None = None,
) -> Decision:
    """Next step, or promotion after the last one."""
    step = min(status.current_step, len(config.steps) - 1)
    if step + 1 >= len(config.steps):
        message = f"all steps passed; promoting {status.canary_image}"
        if reason != "StepPassed":
            message = f"promoted by user: {status.canary_image}"
        promote_reason = "Promoted" if reason == "StepPassed" else reason
        return _promote(config, status, promote_reason, message, verdicts, tick, consumed, serving)
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
    tracks: TrackState,
    migration: Migration | None = None,
) -> Decision:
    assert status.canary_image is not None
    serving = tracks.serving
    if control.abort:
        return _rollback(
            status, "Aborted", "aborted by user", "aborted", consumed=frozenset({"abort"})
        )
    # Before anything starts the canary's pods (a full promotion too), its migration.
    status, waiting = migration_gate(status, migration)
    if waiting is not None:
        return waiting
    failed_migration = rollback_reason(migration)
    if failed_migration is not None:
        return _rollback(status, MIGRATION_FAILED, failed_migration)
    if control.promote == "full":
        message = f"promoted by user: {status.canary_image}"
        return _promote(
            config,
            status,
            "ManualPromotion",
            message,
            consumed=frozenset({"promote"}),
            serving=serving,
        )
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
    manual_step = frozenset({"promote"})
    if status.phase == Phase.PAUSED:
        stuck = status.inconclusive_checks >= config.max_inconclusive
        if stuck and not (control.resume or control.promote == "step"):
            message = "paused after inconclusive analysis; resume or promote to continue"
            return Decision(Action.HOLD, "PausedNoData", message, status)
        resumed = status.evolve(phase=Phase.PROGRESSING, inconclusive_checks=0, step_started_at=now)
        if control.promote == "step" and resumed.current_step >= 0:
            return _advance(
                config, resumed, now, "ManualStep", consumed=manual_step, serving=serving
            )
        consumed = frozenset({"resume"}) if control.resume else _NONE
        return Decision(Action.RESUME, "Resumed", "analysis resumed", resumed, consumed=consumed)
    if status.current_step < 0:
        if not tracks.canary_ready:
            overdue = pods_overdue(config, status, now)
            if overdue is not None:
                return _rollback(status, PROGRESS_DEADLINE_EXCEEDED, overdue)
            message = f"canary {status.canary_image} gets traffic once its pods are ready"
            return Decision(Action.HOLD, AWAITING_CANARY_PODS, message, status)
        started = _first_step(config, status, now)
        if status.canary_image == status.failed_image:
            started = started.evolve(failed_image=None)
        consumed = frozenset({"retry"}) if control.retry else _NONE
        message = f"canary {status.canary_image} at {config.steps[0]}%"
        return Decision(Action.START, "CanaryStarted", message, started, consumed=consumed)
    if control.promote == "step":
        return _advance(config, status, now, "ManualStep", consumed=manual_step, serving=serving)
    decision = _analyse(config, status, readings, now, serving)
    if decision.action == Action.HOLD:
        overdue = step_overdue(config, decision.status, now, decision.message)
        if overdue is not None:
            return _rollback(
                decision.status,
                PROGRESS_DEADLINE_EXCEEDED,
                overdue,
                verdicts=decision.verdicts,
                tick=decision.tick,
            )
    return decision


def _analyse(
    config: CanaryConfig,
    status: CanaryStatus,
    readings: Readings,
    now: datetime,
    serving: Mapping[str, int] | None,
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
        return _advance(config, passed, now, "StepPassed", verdicts, tick, serving=serving)
    message = (
        f"step {step} at {passed.canary_weight}%: {elapsed:.0f}s of {config.step_duration:.0f}s"
    )
    return Decision(Action.HOLD, "StepInProgress", message, passed, verdicts, tick)


def revised(config: CanaryConfig, status: CanaryStatus, now: datetime) -> Decision | None:
    """The decision a changed pod template calls for (the reconciler's part of `decide`)."""
    decision = revise(config, status, now)
    return None if decision is None else complete(config, status, decision, now)


def first_ready(
    config: CanaryConfig, status: CanaryStatus, now: datetime, stable_available: bool
) -> Decision | None:
    """Initializing becomes Ready once the first revision's stable Deployments are
    available (`stable_available`): a CR whose pods never start stays Initializing."""
    if status.phase not in (None, Phase.INITIALIZING) or not status.stable_image:
        return None
    if not stable_available:
        return None
    ready = status.evolve(phase=Phase.READY)
    message = f"{status.stable_image} is available"
    return complete(config, status, Decision(Action.IDLE, "Ready", message, ready), now)
