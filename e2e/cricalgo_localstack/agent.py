"""The stack's local node and mesh as one supervised process (`cricalgo dev up` starts it,
`dev down` stops it with SIGTERM, on which it stops every pod process before exiting).

    python -m cricalgo_localstack.agent --kubeconfig K --state-dir D \
        --nginx-prefix P --mesh-listen 127.0.0.1:PORT

With `--real-node` the node is a real one (kubelet, kube-proxy, containerd; see real_node.py)
on a network `dev up` created; on SIGTERM it drains and removes everything it made.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from .certs import KeyPair
from .mesh import LocalMesh, nginx_applier
from .node import LocalNode
from .real_node import ApiAccess, NodeNetwork, RealNode
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
    real = parser.add_argument_group("a real node instead of the local one")
    real.add_argument("--real-node", action="store_true")
    real.add_argument("--server", help="the API server's URL")
    real.add_argument("--pki-dir", type=Path, help="the cluster's PKI (ca.crt, ca.key)")
    real.add_argument("--kubectl", type=Path)
    real.add_argument("--network", help="SUFFIX,NODE_IP,POD_CIDR of the node's network")
    real.add_argument("--image", action="append", default=[], help="an image to load")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.info("signal %d: stopping the mesh and every pod", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    node: LocalNode | RealNode
    if args.real_node:
        suffix, node_ip, pod_cidr = args.network.split(",")
        api = ApiAccess(
            args.server,
            KeyPair(args.pki_dir / "ca.crt", args.pki_dir / "ca.key"),
            args.kubeconfig,
            args.kubectl,
        )
        node = RealNode(api, NodeNetwork(suffix, node_ip, pod_cidr), args.state_dir, args.node_name)
        pods = pod_cidr
    else:
        node = LocalNode(args.kubeconfig, args.state_dir, name=args.node_name)
        if args.ip_prefix:
            node.ip_prefix = args.ip_prefix
        pods = f"{node.ip_prefix}.0/24"
    mesh = LocalMesh(
        args.kubeconfig,
        nginx_applier(_find_binary("nginx"), args.nginx_prefix),
        listen=args.mesh_listen,
        access_log=args.nginx_prefix / "mesh-access.log",
    )
    ready = args.state_dir / READY_FILE
    try:
        if isinstance(node, RealNode):
            node.start(images=tuple(args.image))
        else:
            node.start()
        mesh.start()
        ready.write_text(f"{node.name} {pods}\n")
        logging.info(
            "node %s (pods on %s) and mesh on %s running", node.name, pods, args.mesh_listen
        )
        stopping.wait()
    finally:
        ready.unlink(missing_ok=True)
        mesh.stop()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
