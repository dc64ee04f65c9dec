"""`cricalgo dev up|down|status|demo`: the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .binaries import BuildError
from .control_plane import KubectlError
from .processes import StartupError
from .stack import (
    LocalStack,
    api_ready,
    default_state_dir,
    live_pids,
    read_state,
    stop_recorded,
)


def _print_endpoints(state: dict[str, object]) -> None:
    kube = state["kubernetes"]
    assert isinstance(kube, dict)
    print(
        "\nThe CricAlgo local stack is up.\n"
        f"  Kubernetes API  {kube['server']}\n"
        f"  kubeconfig      {kube['kubeconfig']}\n"
        f"  kubectl         {kube['kubectl']} --kubeconfig {kube['kubeconfig']} get namespaces\n"
        f"  Redis           {state['redis']}\n"
        f"  PostgreSQL      {state['postgres']}\n"
        f"  Prometheus      {state['prometheus']}\n"
        f"  nginx           {state['nginx']}\n"
        f"  state and logs  {state['state_dir']}\n"
        "Stop it with: cricalgo dev down"
    )


def cmd_up(state_dir: Path) -> int:
    existing = read_state(state_dir)
    if existing is not None and live_pids(existing):
        if api_ready(existing):
            print("The local stack is already running.")
            _print_endpoints(existing)
            return 0
        print("A previous stack is half-running; stopping it first.")
        stop_recorded(state_dir)
    elif existing is not None:
        stop_recorded(state_dir)
    stack = LocalStack(state_dir)
    stack.start()
    _print_endpoints(stack.describe())
    return 0


def cmd_down(state_dir: Path) -> int:
    stopped = stop_recorded(state_dir)
    print(f"stopped: {', '.join(stopped)}" if stopped else "no local stack was running")
    return 0


def cmd_status(state_dir: Path, as_json: bool) -> int:
    state = read_state(state_dir)
    if state is None:
        print("no local stack is running (start one with: cricalgo dev up)")
        return 1
    alive = live_pids(state)
    ready = bool(alive) and api_ready(state)
    if as_json:
        print(json.dumps({**state, "running": sorted(alive), "api_ready": ready}, indent=2))
    else:
        for name, pid in state["pids"].items():
            print(f"  {name:<24} pid {pid:<8} {'running' if name in alive else 'STOPPED'}")
        print(f"  API server /readyz: {'ok' if ready else 'not ready'}")
        if ready:
            _print_endpoints(state)
    return 0 if ready and len(alive) == len(state["pids"]) else 1


def cmd_demo(state_dir: Path) -> int:
    """For now: the stack with its CRDs installed, and how to reach it."""
    code = cmd_up(state_dir)
    if code == 0:
        state = read_state(state_dir)
        assert state is not None
        kube = state["kubernetes"]
        print(
            "\nCRDs installed (CricAlgoDeployment and the Istio networking CRDs):\n"
            f"  {kube['kubectl']} --kubeconfig {kube['kubeconfig']} get crd"
        )
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cricalgo", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)
    dev = sub.add_parser("dev", help="the local stack")
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the stack keeps its state and logs (default: $CRICALGO_STATE_DIR "
        "or ~/.local/state/cricalgo/dev)",
    )
    actions = dev.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="start the stack in the background and print its endpoints")
    actions.add_parser("down", help="stop every process of the stack")
    status = actions.add_parser("status", help="show what runs and whether the API is ready")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser("demo", help="start the stack and run the demo")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or default_state_dir()
    try:
        if args.action == "up":
            return cmd_up(state_dir)
        if args.action == "down":
            return cmd_down(state_dir)
        if args.action == "status":
            return cmd_status(state_dir, args.json)
        return cmd_demo(state_dir)
    except (BuildError, StartupError, KubectlError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
