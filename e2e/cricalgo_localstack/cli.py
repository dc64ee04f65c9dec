"""`cricalgo dev up|down|status|logs|demo`: the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .agent import READY_FILE
from .binaries import BuildError
from .control_plane import KubectlError
from .pods import pod_logs_dir
from .processes import StartupError
from .stack import (
    NODE_DIR,
    LocalStack,
    api_ready,
    default_state_dir,
    live_pids,
    read_state,
    stop_recorded,
)


def _node_summary(state_dir: Path) -> str:
    ready = state_dir / NODE_DIR / READY_FILE
    if not ready.exists():
        return "not running"
    name, cidr = ready.read_text().split()[:2]
    return f"{name}, pod IPs in {cidr}; pod output: cricalgo dev logs POD -n NAMESPACE"


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
        f"  mesh (nginx)    {state['nginx']}  (send the route's Host header)\n"
        f"  local node      {_node_summary(Path(str(state['state_dir'])))}\n"
        f"  state and logs  {state['state_dir']}\n"
        "Stop it with: cricalgo dev down"
    )


def cmd_up(state_dir: Path, real_node: bool = False) -> int:
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
    stack = LocalStack(state_dir, real_node=real_node)
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


def cmd_logs(state_dir: Path, pod: str, namespace: str, container: str | None) -> int:
    """Print the output of a pod's container processes (every restart, in order)."""
    logs_dir = pod_logs_dir(state_dir / NODE_DIR / "pods", namespace, pod)
    files = sorted(logs_dir.glob(f"{container or '*'}.log"))
    if not files:
        known = sorted(
            f"{p.parent.name}/{p.name}" for p in (state_dir / NODE_DIR / "pods").glob("*/*")
        )
        print(
            f"no logs for pod {namespace}/{pod}"
            + (f" container {container}" if container else "")
            + (f"; pods with logs: {', '.join(known)}" if known else ""),
            file=sys.stderr,
        )
        return 1
    for path in files:
        if len(files) > 1:
            print(f"==> container {path.stem} <==", flush=True)
        sys.stdout.write(path.read_text(errors="replace"))
    sys.stdout.flush()
    return 0


def cmd_demo(state_dir: Path) -> int:
    """Bring the stack up, then run a promoted and a rolled-back canary through it."""
    code = cmd_up(state_dir)
    if code != 0:
        return code
    from .demo import run_demo

    return run_demo(state_dir)


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
    up = actions.add_parser("up", help="start the stack in the background and print its endpoints")
    up.add_argument(
        "--real-node",
        action="store_true",
        help="a kubelet node (containerd, kube-proxy; needs root) running the images "
        "`make images` builds, instead of the local node",
    )
    actions.add_parser("down", help="stop every process of the stack")
    status = actions.add_parser("status", help="show what runs and whether the API is ready")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    logs = actions.add_parser("logs", help="print the output of a pod run by the local node")
    logs.add_argument("pod")
    logs.add_argument("-n", "--namespace", default="default")
    logs.add_argument("-c", "--container", default=None)
    actions.add_parser("demo", help="start the stack and run the demo")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or default_state_dir()
    try:
        if args.action == "up":
            return cmd_up(state_dir, args.real_node)
        if args.action == "down":
            return cmd_down(state_dir)
        if args.action == "status":
            return cmd_status(state_dir, args.json)
        if args.action == "logs":
            return cmd_logs(state_dir, args.pod, args.namespace, args.container)
        return cmd_demo(state_dir)
    except (BuildError, StartupError, KubectlError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
