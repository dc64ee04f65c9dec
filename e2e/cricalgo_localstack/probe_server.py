"""The `cricalgo/probe` image: a tiny HTTP server the local node runs to test itself.

It binds `$CRICALGO_HOST:$PORT` (the node sets `CRICALGO_HOST` to the pod IP) and answers
`/` with its pod name (`$POD_NAME`), `/healthz` and `/readyz` with 200 until `POST /sick`
or `POST /unready` flips them to 500, `/metrics` in Prometheus text format, `/env`
with its environment and arguments (what the node resolved), and `/sleep/SECONDS` with its
pod name after that long (an in-flight request for shutdown and reload tests). On SIGTERM
it answers the requests in flight, then exits; `--ignore-sigterm` makes it a process that
only SIGKILL stops, to test grace periods.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class ProbeState:
    def __init__(self, pod_name: str) -> None:
        self.pod_name = pod_name
        self.healthy = True
        self.ready = True
        self.requests = 0
        self.in_flight = 0
        self.lock = threading.Lock()


def _handler(state: ProbeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
            if self.path == "/healthz":
                self._send(200 if state.healthy else 500, "ok\n" if state.healthy else "sick\n")
            elif self.path == "/readyz":
                self._send(200 if state.ready else 500, "ready\n" if state.ready else "unready\n")
            elif self.path == "/env":
                body = {"env": dict(os.environ), "argv": sys.argv[1:]}
                self._send(200, json.dumps(body), "application/json")
            elif self.path == "/metrics":
                self._send(
                    200,
                    "# HELP cricalgo_probe_requests_total Requests this probe server answered.\n"
                    "# TYPE cricalgo_probe_requests_total counter\n"
                    f"cricalgo_probe_requests_total {state.requests}\n",
                    "text/plain; version=0.0.4",
                )
            elif self.path.startswith("/sleep/"):
                try:
                    seconds = float(self.path.removeprefix("/sleep/"))
                except ValueError:
                    self._send(400, "usage: /sleep/SECONDS\n")
                    return
                with state.lock:
                    state.in_flight += 1
                try:
                    time.sleep(min(seconds, 60.0))
                    self._send(200, state.pod_name)
                finally:
                    with state.lock:
                        state.in_flight -= 1
            else:
                self._send(200, state.pod_name)

        def do_POST(self) -> None:
            if self.path == "/sick":
                state.healthy = False
            elif self.path == "/unready":
                state.ready = False
            elif self.path == "/ready":
                state.ready = True
            self._send(200, "ok\n")

        def log_message(self, format: str, *args: object) -> None:
            if self.path not in ("/healthz", "/readyz"):
                sys.stdout.write(f"{self.address_string()} {format % args}\n")
                sys.stdout.flush()

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cricalgo-probe")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--ignore-sigterm", action="store_true")
    args = parser.parse_args(argv)
    host = os.environ.get("CRICALGO_HOST", "127.0.0.1")
    port = args.port
    state = ProbeState(os.environ.get("POD_NAME", "unknown"))
    server = ThreadingHTTPServer((host, port), _handler(state))
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        if args.ignore_sigterm:
            print(f"probe {state.pod_name}: signal {signum}, ignored", flush=True)
            return
        print(f"probe {state.pod_name}: signal {signum}, shutting down", flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"probe {state.pod_name} listening on {host}:{port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    # Like a web server's graceful shutdown: answer the requests in flight, then exit.
    while state.in_flight:
        time.sleep(0.05)
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
