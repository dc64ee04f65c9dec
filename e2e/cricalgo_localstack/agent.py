"""The stack's local node and mesh as one supervised process (`cricalgo dev up` starts it,
`dev down` stops it with SIGTERM, on which it stops every pod process before exiting).

    python -m cricalgo_localstack.agent --kubeconfig K --state-dir D \
        --nginx-prefix P --mesh-listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from .mesh import LocalMesh, nginx_applier
from .node import LocalNode
from .services import _find_binary

READY_FILE = "agent.ready"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cricalgo-local-agent", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node-name", default="cricalgo-local")
    parser.add_argument("--ip-prefix", default=None, help="127.A.B: the node's pod /24")
    parser.add_argument("--nginx-prefix", type=Path, required=True)
    parser.add_argument("--mesh-listen", required=True, help="host:port of the mesh")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.info("signal %d: stopping the mesh and every pod", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    node = LocalNode(args.kubeconfig, args.state_dir, name=args.node_name)
    if args.ip_prefix:
        node.ip_prefix = args.ip_prefix
    mesh = LocalMesh(
        args.kubeconfig,
        nginx_applier(_find_binary("nginx"), args.nginx_prefix),
        listen=args.mesh_listen,
        access_log=args.nginx_prefix / "mesh-access.log",
    )
    ready = args.state_dir / READY_FILE
    try:
        node.start()
        mesh.start()
        ready.write_text(f"{node.name} {node.ip_prefix}.0/24\n")
        logging.info(
            "node %s (pods on %s.0/24) and mesh on %s running",
            node.name,
            node.ip_prefix,
            args.mesh_listen,
        )
        stopping.wait()
    finally:
        ready.unlink(missing_ok=True)
        mesh.stop()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
