"""One pod on the local node: a thread that runs its containers as processes, reports its
status to the API server, and on deletion stops them and removes the pod object."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .containers import ContainerProcess, image_entrypoint, resolve_executable
from .kube_api import MERGE_PATCH, now_rfc3339
from .kubeconfig import render_kubeconfig, write_kubeconfig
from .pod_env import EnvError, ObjectLookup, container_argv, container_env

log = logging.getLogger("cricalgo.localstack.node")

TICK = 0.25


@dataclass(frozen=True)
class NodeContext:
    """What a pod worker needs from its node."""

    core: Any  # kubernetes.client.CoreV1Api
    node_name: str
    logs_dir: Path
    bin_dir: Path
    lookup: ObjectLookup
    emit_event: Callable[[Mapping[str, Any], str, str, str], None]
    # What a pod's ServiceAccount kubeconfig points at.
    api_server: str = ""
    ca_file: str = ""


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def pod_logs_dir(logs_dir: Path, namespace: str, name: str) -> Path:
    """Where the containers of a pod write their output (`<container>.log`)."""
    return logs_dir / namespace / name


def grace_seconds(pod: Mapping[str, Any]) -> float:
    meta, spec = pod["metadata"], pod.get("spec", {})
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return float(grace)


class PodWorker:
    """Runs one pod until it is deleted (or the node stops)."""

    def __init__(self, node: NodeContext, pod: Mapping[str, Any], pod_ip: str) -> None:
        self.node = node
        self.pod: Mapping[str, Any] = pod
        self.pod_ip = pod_ip
        self.uid = str(pod["metadata"]["uid"])
        self.key = pod_key(pod)
        self._stop = threading.Event()
        self._delete_after_stop = False
        self._stop_grace = 30.0
        self._published: dict[str, Any] | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self._warned: set[str] = set()
        self.init_containers: list[ContainerProcess] = []
        self.containers: list[ContainerProcess] = []
        self._waiting: tuple[str, str] | None = ("ContainerCreating", "")
        self._kubeconfig: Path | None = None
        self._started_at = now_rfc3339()
        self.thread = threading.Thread(target=self._run, name=f"pod {self.key}", daemon=True)

    # -- control from the node ------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def update(self, pod: Mapping[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.request_stop(grace_seconds(pod), delete=True)

    def request_stop(self, grace: float, delete: bool) -> None:
        if not self._stop.is_set():
            self._stop_grace, self._delete_after_stop = grace, delete
            self._stop.set()

    def finished(self) -> bool:
        return not self.thread.is_alive()

    # -- the pod's life ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._life()
        except Exception:
            log.exception("pod %s: worker failed", self.key)
        finally:
            self._shutdown()

    def _life(self) -> None:
        while not self._stop.is_set() and not self._prepare():
            self._publish()
            self._stop.wait(2.0)
        if self._stop.is_set():
            return
        for init in self.init_containers:
            init.start()
            self._event("Normal", "Started", f"Started init container {init.name}")
            while not self._stop.is_set() and not init.done():
                self._tick_one(init)
                self._publish()
                self._stop.wait(TICK)
            if self._stop.is_set():
                return
            if init.terminated and init.terminated["exitCode"] != 0:
                self._publish(failed=True)
                self._stop.wait()
                return
        for container in self.containers:
            container.start()
            self._event("Normal", "Started", f"Started container {container.name}")
        while not self._stop.is_set():
            for container in self.containers:
                self._tick_one(container)
            self._publish()
            self._stop.wait(TICK)

    def _tick_one(self, container: ContainerProcess) -> None:
        for kind, reason, message in container.tick(container.env, time.monotonic()):
            self._event(kind, reason, message)

    def _prepare(self) -> bool:
        """Resolve every container's program and environment; False while it cannot."""
        spec = self.pod["spec"]
        init_specs, main_specs = spec.get("initContainers") or [], spec["containers"]
        unknown = [
            c["image"] for c in [*init_specs, *main_specs] if not image_entrypoint(c["image"])
        ]
        if unknown:
            message = (
                f"image {unknown[0]!r} is not one of the project's images the local node can run "
                "(cricalgo/workload, cricalgo/operator, cricalgo/probe); the pod stays Pending"
            )
            self._waiting = ("UnknownImage", message)
            self._warn_once("UnknownImage", message)
            return False
        try:
            self._kubeconfig = self._service_account_kubeconfig()
            self.init_containers = [self._container(c, init=True) for c in init_specs]
            self.containers = [self._container(c, init=False) for c in main_specs]
        except EnvError as err:
            self._waiting = ("CreateContainerConfigError", str(err))
            self._warn_once("Failed", f"Error: {err}")
            return False
        self._waiting = None
        return True

    def _container(self, spec: Mapping[str, Any], init: bool) -> ContainerProcess:
        env = container_env(self.pod, spec, self.pod_ip, self.node.lookup)
        entrypoint = image_entrypoint(spec["image"]) or []
        argv = container_argv(spec, entrypoint, env)
        argv[0] = resolve_executable(argv[0], self.node.bin_dir)
        meta = self.pod["metadata"]
        base = {
            "PATH": f"{self.node.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": meta["name"],
            **({"KUBECONFIG": str(self._kubeconfig)} if self._kubeconfig else {}),
        }
        # The node decides where a pod listens: its own loopback address, whatever the pod
        # says (a manifest written for a real cluster would bind 0.0.0.0).
        forced = {"CRICALGO_HOST": self.pod_ip, "CRICALGO_IMAGE": spec["image"]}
        logs = pod_logs_dir(self.node.logs_dir, meta["namespace"], meta["name"])
        return ContainerProcess(
            spec=spec,
            argv=argv,
            env={**base, **env, **forced},
            log_path=logs / f"{spec['name']}.log",
            pod_ip=self.pod_ip,
            restart_policy=self.pod["spec"].get("restartPolicy", "Always"),
            init=init,
            grace=float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
        )

    def _service_account_kubeconfig(self) -> Path | None:
        """The pod's ServiceAccount credentials, as a kubeconfig its processes find through
        `KUBECONFIG` (a kubelet mounts a token at /var/run/secrets/...; processes sharing this
        machine cannot each have their own file there).

        The token is a bound token (TokenRequest) for the pod, valid for 24 hours.
        """
        from kubernetes.client.exceptions import ApiException

        spec, meta = self.pod["spec"], self.pod["metadata"]
        if spec.get("automountServiceAccountToken") is False or not self.node.api_server:
            return None
        account = spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 86400,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": self.uid,
                },
            },
        }
        try:
            response = self.node.core.create_namespaced_service_account_token(
                account, meta["namespace"], request, _preload_content=False
            )
        except ApiException as err:
            raise EnvError(
                f"no token for ServiceAccount {meta['namespace']}/{account}: {err.status}"
            ) from None
        token = json.loads(response.data)["status"]["token"]
        directory = (
            pod_logs_dir(self.node.logs_dir, meta["namespace"], meta["name"]) / "serviceaccount"
        )
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(token)
        (directory / "namespace").write_text(meta["namespace"])
        config = render_kubeconfig(
            self.node.api_server,
            Path(self.node.ca_file),
            token=token,
            user=f"system:serviceaccount:{meta['namespace']}:{account}",
        )
        config["contexts"][0]["context"]["namespace"] = meta["namespace"]
        return write_kubeconfig(directory / "kubeconfig", config)

    def _shutdown(self) -> None:
        log.debug("pod %s: shutting down (delete=%s)", self.key, self._delete_after_stop)
        running = [c for c in [*self.init_containers, *self.containers] if c.running()]
        for container in running:
            self._event("Normal", "Killing", f"Stopping container {container.name}")
        grace = self._stop_grace
        if running:
            with ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(lambda c: c.stop(grace), running))
        if self._delete_after_stop:
            self._delete()
        elif running:
            self._publish()

    def _delete(self) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = self.pod["metadata"]
        try:
            self.node.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                # In the body: the client sends a body, and the API server then ignores
                # the query parameter.
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        except ApiException as err:
            if err.status not in (404, 409):
                log.warning("pod %s: delete failed: %s", self.key, err.status)

    # -- status ---------------------------------------------------------------------------

    def _condition(self, kind: str, value: bool) -> dict[str, Any]:
        status = "True" if value else "False"
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != status:
            self._transitions[kind] = (status, now_rfc3339())
        return {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }

    def render_status(self, failed: bool = False) -> dict[str, Any]:
        spec = self.pod["spec"]
        initialized = all(c.done() for c in self.init_containers) and self._waiting is None
        ready = bool(self.containers) and initialized and all(c.ready() for c in self.containers)
        if failed:
            phase = "Failed"
        elif self._waiting is not None or not initialized:
            phase = "Pending"
        elif self.containers and all(c.done() for c in self.containers):
            codes = [c.terminated["exitCode"] for c in self.containers if c.terminated]
            phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        elif any(c.running() or c.restart_at is not None for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self._started_at,
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("Initialized", initialized),
                self._condition("ContainersReady", ready),
                self._condition("Ready", ready),
            ],
        }
        if self._waiting is None:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
            status["containerStatuses"] = [
                c.status(s["image"])
                for c, s in zip(self.containers, spec["containers"], strict=True)
            ]
            if self.init_containers:
                status["initContainerStatuses"] = [
                    c.status(s["image"])
                    for c, s in zip(self.init_containers, spec["initContainers"], strict=True)
                ]
        else:
            reason, message = self._waiting
            waiting = {"waiting": {"reason": reason, "message": message}}
            status["containerStatuses"] = [
                {
                    "name": s["name"],
                    "image": s["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": waiting,
                }
                for s in spec["containers"]
            ]
        return status

    def _publish(self, failed: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException

        status = self.render_status(failed)
        if status == self._published:
            return
        meta = self.pod["metadata"]
        try:
            self.node.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}, _content_type=MERGE_PATCH
            )
            self._published = status
        except ApiException as err:
            if err.status == 404:
                self.request_stop(0.0, delete=False)
            else:
                log.warning("pod %s: status update failed: %s", self.key, err.status)

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.node.emit_event(self.pod, kind, reason, message)

    def _warn_once(self, reason: str, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._event("Warning", reason, message)
