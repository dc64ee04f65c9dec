"""`kubectl-cricalgo`: the kubectl plugin for CricAlgoDeployment canaries.

    kubectl cricalgo list [-n NAMESPACE]
    kubectl cricalgo status NAME [-n NAMESPACE] [--watch]
    kubectl cricalgo promote NAME [--full]
    kubectl cricalgo abort|pause|resume|retry NAME

`list` prints every CR of the namespace with its phase, weight and last verdict. `status`
prints the steps, the weight and every SLO reading against its threshold; with `--watch`
again at each change, until the CR is deleted or the command is interrupted. The other
commands file a request the operator acts on at its next analysis tick
(canary/controls.py lists which are annotations and which are spec fields).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from cricalgo_operator.canary.controls import (
    patch_cad,
    pause_patch,
    request_patch,
    request_stamp,
)
from cricalgo_operator.kubeapi import ApiError, KubeApi
from cricalgo_operator.model import with_defaults
from cricalgo_operator.naming import API_VERSION, KIND

COMMANDS = ("list", "status", "promote", "abort", "pause", "resume", "retry")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_status(body: dict[str, Any]) -> str:
    """Human-readable canary status of one CR (pure: a function of the object)."""
    meta = body.get("metadata") or {}
    spec = with_defaults(body.get("spec") or {})
    status = body.get("status") or {}
    canary = spec["canary"]
    steps = [int(s) for s in canary["steps"]]
    step = int(status.get("currentStep", -1) if status.get("currentStep") is not None else -1)
    marked = " ".join(f"[{s}]" if i == step else str(s) for i, s in enumerate(steps))
    lines = [
        f"{meta.get('namespace')}/{meta.get('name')}: {status.get('phase', 'Unknown')}"
        f"  weight {status.get('canaryWeight', 0)}%",
        f"  stable   {status.get('stableImage', '-')}",
        f"  canary   {status.get('canaryImage') or '-'}",
        f"  steps    {marked}  (each {canary['stepDuration']}, "
        f"analysis every {canary['analysisInterval']})",
        f"  step started {status.get('stepStartedAt', '-')}",
        f"  failed checks {status.get('failedChecks', 0)}/{canary['maxFailedChecks']}"
        f"  inconclusive {status.get('inconclusiveChecks', 0)}/{canary['maxInconclusive']}"
        f"  on no data: {canary['onNoData']}",
    ]
    if status.get("failedImage"):
        lines.append(f"  failed image {status['failedImage']} (retry to analyse it again)")
    if canary.get("paused"):
        lines.append("  paused by spec.canary.paused")
    analysis = status.get("lastAnalysis") or {}
    if analysis:
        lines.append(f"last analysis {analysis.get('time')}: {analysis.get('verdict')}")
        rows = [("METRIC", "TRACK", "VALUE", "THRESHOLD", "VERDICT", "REASON")]
        rows += [
            (
                m.get("name", ""),
                m.get("track", ""),
                _value(m.get("value")),
                _value(m.get("threshold")),
                m.get("verdict", ""),
                m.get("reason", ""),
            )
            for m in analysis.get("metrics") or []
        ]
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        for row in rows:
            cells = [str(c).ljust(w) for c, w in zip(row[:5], widths, strict=True)]
            lines.append("  " + "  ".join(cells) + "  " + str(row[5]))
    history = status.get("history") or []
    if history:
        lines.append("history")
        for entry in history:
            lines.append(
                f"  {entry.get('finishedAt', '-')}  {entry.get('image')}  "
                f"{entry.get('outcome')}  {entry.get('reason', '')}"
            )
    return "\n".join(lines)


def _age(since: str | None, now: datetime.datetime) -> str:
    """`42s`, `7m`, `3h`, `2d` since an RFC 3339 time, as kubectl prints ages."""
    if not since:
        return "-"
    try:
        then = datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_list(bodies: Sequence[dict[str, Any]], now: datetime.datetime) -> str:
    """One line per CR: phase, images, weight, step, last verdict and its age (pure)."""
    rows = [("NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "LAST VERDICT", "AGE")]
    for body in sorted(bodies, key=lambda b: str((b.get("metadata") or {}).get("name"))):
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        steps = with_defaults(body.get("spec") or {})["canary"]["steps"]
        step = int(status.get("currentStep", -1) if status.get("currentStep") is not None else -1)
        analysis = status.get("lastAnalysis") or {}
        verdict = analysis.get("verdict")
        rows.append(
            (
                str(meta.get("name")),
                str(status.get("phase") or "Unknown"),
                str(status.get("stableImage") or "-"),
                str(status.get("canaryImage") or "-"),
                f"{status.get('canaryWeight') or 0}%",
                f"{step + 1}/{len(steps)}" if step >= 0 and status.get("canaryImage") else "-",
                f"{verdict} {_age(analysis.get('time'), now)} ago" if verdict else "-",
                _age(meta.get("creationTimestamp"), now),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def watch_status(api: KubeApi, namespace: str, name: str, out: TextIO) -> int:
    """Print the status now and again at each change that shows, until the CR is deleted."""
    last = None
    async for event, body in api.watch(API_VERSION, KIND, namespace, name):
        if event == "DELETED":
            print(f"{namespace}/{name} deleted", file=out, flush=True)
            return 0
        shown = render_status(body)
        if shown != last:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
            print(f"--- {stamp}\n{shown}", file=out, flush=True)
            last = shown
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubectl cricalgo", description="Inspect and steer CricAlgoDeployment canaries."
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("name", nargs="?", help="the CricAlgoDeployment (all of them: list)")
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's, else default")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config")
    parser.add_argument("--full", action="store_true", help="promote: skip all remaining steps")
    parser.add_argument(
        "-w", "--watch", action="store_true", help="status: print again at each change"
    )
    args = parser.parse_args(argv)
    if args.command != "list" and not args.name:
        parser.error(f"{args.command} needs the name of a CricAlgoDeployment")
    if args.watch and args.command != "status":
        parser.error("--watch goes with status")
    return args


def _kubeconfig(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG")
    if env:
        return env.split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


async def run(args: argparse.Namespace, out: TextIO) -> int:
    api = KubeApi.connect(_kubeconfig(args.kubeconfig))
    namespace = args.namespace or api.client.namespace
    try:
        if args.command == "list":
            found = await api.list(API_VERSION, KIND, namespace)
            if not found:
                print(f"no cricalgodeployments in namespace {namespace}", file=out)
                return 0
            print(render_list(found, datetime.datetime.now(datetime.UTC)), file=out)
            return 0
        body = await api.get(API_VERSION, KIND, namespace, args.name)
        if body is None:
            print(f"cricalgodeployment {namespace}/{args.name} not found", file=sys.stderr)
            return 1
        if args.command == "status":
            if args.watch:
                return await watch_status(api, namespace, args.name, out)
            print(render_status(body), file=out)
            return 0
        stamp = request_stamp()
        if args.command == "pause":
            await patch_cad(api, namespace, args.name, pause_patch(True))
            what = "paused (spec.canary.paused: true)"
        elif args.command == "resume":
            # Unpause the spec, and release a pause the analysis took for lack of data.
            await patch_cad(api, namespace, args.name, pause_patch(False))
            await patch_cad(api, namespace, args.name, request_patch("resume", stamp))
            what = "resume requested"
        elif args.command == "promote":
            value = "full" if args.full else "step"
            await patch_cad(api, namespace, args.name, request_patch("promote", value))
            what = (
                "full promotion requested" if args.full else "promotion to the next step requested"
            )
        else:
            await patch_cad(api, namespace, args.name, request_patch(args.command, stamp))
            what = f"{args.command} requested"
        print(f"{namespace}/{args.name}: {what}", file=out)
        return 0
    except ApiError as error:
        print(f"kubectl cricalgo {args.command}: {error}", file=sys.stderr)
        return 1
    finally:
        await api.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(parse_args(argv), sys.stdout))
    except KeyboardInterrupt:  # the way out of --watch
        return 130


if __name__ == "__main__":
    sys.exit(main())
