"""The local mesh: watches VirtualServices, DestinationRules, Ingresses, Services and Pods,
renders nginx's routing with `mesh_config.render_mesh_config`, and reloads nginx when the
rendered text changes (and only then)."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kube_api import (
    Resource,
    api_client,
    ingresses,
    istio,
    pods,
    services,
    watch_forever,
)
from .mesh_config import MeshObjects, render_mesh_config
from .processes import free_port
from .services import reload_nginx

log = logging.getLogger("cricalgo.localstack.mesh")

# Changes arriving together (a rollout step touches several objects) make one reload.
DEBOUNCE_SECONDS = 0.1
RESYNC_SECONDS = 30.0


def nginx_applier(nginx_bin: str, prefix: Path) -> Callable[[str], None]:
    """Apply an http-block body to an nginx started by `NginxServer` in another process:
    write `http.conf`, check it with `nginx -t`, SIGHUP the master from its pid file."""
    conf = prefix / "nginx.conf"

    def apply(text: str) -> None:
        http_conf = prefix / "http.conf"
        previous = http_conf.read_text() if http_conf.exists() else ""
        http_conf.write_text(text)
        check = subprocess.run(
            [nginx_bin, "-p", str(prefix), "-c", str(conf), "-t"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            http_conf.write_text(previous)
            raise ValueError(f"nginx rejected the config:\n{check.stderr.strip()}")
        reload_nginx(int((prefix / "nginx.pid").read_text().strip()))

    return apply


@dataclass
class LocalMesh:
    """Keeps nginx's routing equal to what the cluster's traffic objects say."""

    kubeconfig: Path
    apply_config: Callable[[str], None]
    listen: str
    access_log: Path | None = None
    no_endpoints_port: int = field(default_factory=free_port)
    config: str = field(default="", init=False)
    reloads: int = field(default=0, init=False)
    _objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, init=False)
    _dirty: threading.Event = field(default_factory=threading.Event, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _client: Any = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Where requests enter the mesh (send them with the route's Host header)."""
        return f"http://{self.listen}"

    def start(self) -> None:
        self._client = api_client(self.kubeconfig)
        kinds: list[Resource] = [
            istio(self._client, "virtualservices"),
            istio(self._client, "destinationrules"),
            ingresses(self._client),
            services(self._client),
            pods(self._client),
        ]
        for resource in kinds:
            self._objects[resource.name] = {}
            self._spawn(resource.name, self._watcher(resource))
        self._spawn("reconcile", self._reconcile_loop)

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        for thread in self._threads:
            thread.join(1.0)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"mesh {name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _watcher(self, resource: Resource) -> Callable[[], None]:
        def on_list(items: list[dict[str, Any]]) -> None:
            with self._lock:
                self._objects[resource.name] = {i["metadata"]["uid"]: i for i in items}
            self._dirty.set()

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            with self._lock:
                store = self._objects[resource.name]
                if kind == "DELETED":
                    store.pop(obj["metadata"]["uid"], None)
                else:
                    store[obj["metadata"]["uid"]] = obj
            self._dirty.set()

        return lambda: watch_forever(resource, on_list, on_event, self._stopping)

    def snapshot(self) -> MeshObjects:
        with self._lock:
            return MeshObjects(
                virtual_services=list(self._objects["virtualservices"].values()),
                destination_rules=list(self._objects["destinationrules"].values()),
                ingresses=list(self._objects["ingresses"].values()),
                services=list(self._objects["services"].values()),
                pods=list(self._objects["pods"].values()),
            )

    def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait(RESYNC_SECONDS)
            if self._stopping.wait(DEBOUNCE_SECONDS):
                return
            self._dirty.clear()
            try:
                self.reconcile()
            except Exception as err:
                log.warning("mesh: could not apply the nginx config: %s", err)
                self._dirty.set()
                self._stopping.wait(1.0)

    def reconcile(self) -> bool:
        """Render from the current objects; apply and return True if the text changed."""
        text = render_mesh_config(
            self.snapshot(),
            listen=self.listen,
            no_endpoints=f"127.0.0.1:{self.no_endpoints_port}",
            access_log=str(self.access_log) if self.access_log else None,
        )
        if text == self.config:
            return False
        self.apply_config(text)
        self.config = text
        self.reloads += 1
        log.info("mesh: nginx reloaded (%d)", self.reloads)
        return True
