"""The local node: a Node object kept alive with a Lease and status heartbeats, and a
watch on the pods bound to it, each run by a `PodWorker` on its own loopback address.

Pod IPs come from a /24 of 127/8 picked at random per node (Linux routes all of 127/8 to
`lo`, so a process binds 127.A.B.C without any configuration); a random block keeps nodes
of parallel test sessions on one machine apart.
"""

from __future__ import annotations

import base64
import logging
import random
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .containers import kill_recorded
from .kube_api import MERGE_PATCH, api_client, now_rfc3339, pods, watch_forever
from .pods import NodeContext, PodWorker, grace_seconds, pod_key

log = logging.getLogger("cricalgo.localstack.node")

HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 40
# Pods are processes sharing the machine; the node overcommits on purpose, so the
# scheduler never holds back a canary pod over requests sized for a real cluster.
CAPACITY = {"cpu": "32", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
KUBELET_VERSION = "v1.34.0"
NODE_COMPONENT = "cricalgo-local-node"


def random_ip_prefix() -> str:
    """`127.A.B` for a /24 that is unlikely to be another node's (127.0.0.x is left alone)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"


class PodIPPool:
    """Hands out .2 .. .254 of the node's /24 round-robin, so a freed address is not
    reused while the old process's sockets may still linger."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._used: set[int] = set()
        self._next = 2
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            for _ in range(253):
                host, self._next = self._next, 2 + (self._next - 1) % 253
                if host not in self._used:
                    self._used.add(host)
                    return f"{self.prefix}.{host}"
        raise RuntimeError(f"no free pod IP left in {self.prefix}.0/24")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(int(ip.rsplit(".", 1)[1]))


def render_node(name: str, ip_prefix: str) -> dict[str, Any]:
    """The Node object the local node registers."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "cricalgo.io/local-node": "true",
            },
            "annotations": {"cricalgo.io/pod-cidr": f"{ip_prefix}.0/24"},
        },
        "spec": {},
    }


def render_node_status(ready: bool = True) -> dict[str, Any]:
    now = now_rfc3339()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": CAPACITY,
        "allocatable": CAPACITY,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            condition(
                "Ready",
                "True" if ready else "False",
                "KubeletReady" if ready else "KubeletNotReady",
                "cricalgo local node runs pods as processes" if ready else "stopped",
            ),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": "localhost"},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "cricalgo-local",
            "systemUUID": "cricalgo-local",
            "bootID": "cricalgo-local",
            "kernelVersion": "",
            "osImage": "CricAlgo local node",
            "containerRuntimeVersion": "cricalgo-local://0.1",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def _micro_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


@dataclass
class LocalNode:
    """A node of the local cluster whose pods are processes of this machine."""

    kubeconfig: Path
    state_dir: Path
    name: str = "cricalgo-local"
    ip_prefix: str = field(default_factory=random_ip_prefix)
    workers: dict[str, PodWorker] = field(default_factory=dict, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _client: Any = field(default=None, init=False)
    _core: Any = field(default=None, init=False)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "pods"

    def start(self) -> None:
        """Register the Node, then heartbeat and run pods in background threads."""
        from kubernetes import client

        self.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.logs_dir.glob("*/*/*.pid"):
            kill_recorded(stale)
        self._client = api_client(self.kubeconfig)
        self._core = client.CoreV1Api(self._client)
        self._ips = PodIPPool(self.ip_prefix)
        self._context = NodeContext(
            core=self._core,
            node_name=self.name,
            logs_dir=self.logs_dir,
            bin_dir=Path(sys.executable).parent,
            lookup=self._lookup,
            emit_event=self._emit_event,
            api_server=str(self._client.configuration.host),
            ca_file=str(self._client.configuration.ssl_ca_cert or ""),
        )
        self._register()
        self._spawn("heartbeat", self._heartbeat_loop)
        self._spawn(
            "pod watch",
            lambda: watch_forever(
                pods(self._client),
                self._on_list,
                self._on_event,
                self._stopping,
                field_selector=f"spec.nodeName={self.name}",
            ),
        )

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=f"node {name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, max_grace: float = 5.0) -> None:
        """Stop every pod's processes (SIGTERM, at most `max_grace` s, SIGKILL), mark the
        Node not ready, and stop the threads. Pod objects stay, as with a stopped kubelet."""
        self._stopping.set()
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.request_stop(min(max_grace, grace_seconds(worker.pod)), delete=False)
        for worker in workers:
            worker.thread.join(max_grace + 5)
        for thread in self._threads:
            thread.join(1.0)
        if self._core is not None:
            try:
                self._core.patch_node_status(
                    self.name,
                    {"status": render_node_status(ready=False)},
                    _content_type=MERGE_PATCH,
                )
            except Exception as err:
                log.info("node %s: could not mark NotReady: %s", self.name, err)
            self._client.close()
            self._core = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "pod_cidr": f"{self.ip_prefix}.0/24", "logs": str(self.logs_dir)}

    # -- the Node object ------------------------------------------------------------------

    def _register(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.create_node(render_node(self.name, self.ip_prefix))
        except ApiException as err:
            if err.status != 409:
                raise
            self._core.patch_node(
                self.name, render_node(self.name, self.ip_prefix), _content_type=MERGE_PATCH
            )
        self._heartbeat()

    def _heartbeat(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        self._core.patch_node_status(
            self.name, {"status": render_node_status()}, _content_type=MERGE_PATCH
        )
        leases: Any = client.CoordinationV1Api(self._client)
        lease: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro_now(),
            },
        }
        try:
            leases.patch_namespaced_lease(
                self.name, "kube-node-lease", lease, _content_type=MERGE_PATCH
            )
        except ApiException as err:
            if err.status != 404:
                raise
            # The client turns a create body into its model and mangles the MicroTime
            # renewTime; a patch body goes out as written, so renew right after creating.
            created = {**lease, "spec": {**lease["spec"], "renewTime": None}}
            leases.create_namespaced_lease("kube-node-lease", created)
            leases.patch_namespaced_lease(
                self.name, "kube-node-lease", lease, _content_type=MERGE_PATCH
            )

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
            except Exception as err:
                log.warning("node %s: heartbeat failed: %s", self.name, err)

    # -- pods ----------------------------------------------------------------------------

    def _on_list(self, items: list[dict[str, Any]]) -> None:
        present = {item["metadata"]["uid"] for item in items}
        with self._lock:
            gone = [w for uid, w in self.workers.items() if uid not in present]
        for worker in gone:
            worker.request_stop(0.0, delete=False)
        for item in items:
            self._on_event("ADDED", item)

    def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        self._reap()
        with self._lock:
            worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                # Deleted without us (forced): the processes must go now.
                worker.request_stop(0.0, delete=False)
            return
        if worker is not None:
            worker.update(pod)
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            if pod["metadata"].get("deletionTimestamp"):
                self._core.delete_namespaced_pod(
                    pod["metadata"]["name"],
                    pod["metadata"]["namespace"],
                    body={"gracePeriodSeconds": 0},
                )
            return
        worker = PodWorker(self._context, pod, self._ips.allocate())
        with self._lock:
            self.workers[uid] = worker
        log.info("node %s: running pod %s on %s", self.name, pod_key(pod), worker.pod_ip)
        worker.start()
        worker.update(pod)

    def _reap(self) -> None:
        with self._lock:
            done = [uid for uid, w in self.workers.items() if w.finished()]
            for uid in done:
                self._ips.release(self.workers.pop(uid).pod_ip)

    def _lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        read = (
            self._core.read_namespaced_secret
            if kind == "Secret"
            else self._core.read_namespaced_config_map
        )
        try:
            obj = read(name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        import json

        body = json.loads(obj.data)
        data: dict[str, str] = dict(body.get("data") or {})
        if kind == "Secret":
            for key, value in (body.get("stringData") or {}).items():
                data[key] = base64.b64encode(value.encode()).decode()
        return data

    def _emit_event(self, pod: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": NODE_COMPONENT, "host": self.name},
            "reportingComponent": NODE_COMPONENT,
            "reportingInstance": self.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            if self._core is not None:
                self._core.create_namespaced_event(meta["namespace"], event)
        except Exception as err:
            log.info("pod %s: event %s not recorded: %s", pod_key(pod), reason, err)
