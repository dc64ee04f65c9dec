"""The few Kubernetes API calls the local node and mesh make, as plain dicts.

A thin layer over the official `kubernetes` client (sync; the node and mesh call it from
threads): lists come back as JSON dicts, watches resume from a resourceVersion and start
over with a fresh list when the server answers 410 Gone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cricalgo.localstack")

MERGE_PATCH = "application/merge-patch+json"


def api_client(kubeconfig: Path) -> Any:
    """An admin `ApiClient` with a connection pool big enough for a few threads."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    return client.ApiClient(configuration)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Resource:
    """One listable kind: `list_call(**kwargs)` lists it across namespaces."""

    name: str
    list_call: Callable[..., Any]


def pods(client: Any) -> Resource:
    from kubernetes import client as k

    return Resource("pods", k.CoreV1Api(client).list_pod_for_all_namespaces)


def services(client: Any) -> Resource:
    from kubernetes import client as k

    return Resource("services", k.CoreV1Api(client).list_service_for_all_namespaces)


def ingresses(client: Any) -> Resource:
    from kubernetes import client as k

    return Resource("ingresses", k.NetworkingV1Api(client).list_ingress_for_all_namespaces)


def istio(client: Any, plural: str) -> Resource:
    from kubernetes import client as k

    api = k.CustomObjectsApi(client)

    def list_call(**kwargs: Any) -> Any:
        return api.list_cluster_custom_object("networking.istio.io", "v1", plural, **kwargs)

    return Resource(plural, list_call)


def list_items(resource: Resource, **selectors: str) -> tuple[list[dict[str, Any]], str]:
    """Every object of a kind as dicts, and the list's resourceVersion."""
    response = resource.list_call(_preload_content=False, **selectors)
    body = json.loads(response.data)
    return list(body.get("items", [])), str(body["metadata"]["resourceVersion"])


def watch_forever(
    resource: Resource,
    on_list: Callable[[list[dict[str, Any]]], None],
    on_event: Callable[[str, dict[str, Any]], None],
    stopping: threading.Event,
    **selectors: str,
) -> None:
    """List, then watch from the list's resourceVersion until `stopping` is set.

    A 410 Gone (or any broken stream) starts over with a new list, so `on_list` always
    receives the complete current set after a gap.
    """
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    while not stopping.is_set():
        try:
            items, version = list_items(resource, **selectors)
            on_list(items)
            while not stopping.is_set():
                stream = watch.Watch().stream(
                    resource.list_call,
                    resource_version=version,
                    timeout_seconds=5,
                    allow_watch_bookmarks=True,
                    # Plain dicts: the model classes are slow and strict for no gain here.
                    deserialize=False,
                    **selectors,
                )
                for event in _events(stream):
                    kind, obj = event["type"], event["object"]
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        on_event(kind, obj)
                    if stopping.is_set():
                        break
        except ApiException as err:
            if err.status != 410 and not stopping.is_set():
                log.warning("watch %s failed (%s); listing again", resource.name, err.status)
                stopping.wait(1.0)
        except Exception as err:
            if not stopping.is_set():
                log.warning("watch %s broke (%s); listing again", resource.name, err)
                stopping.wait(1.0)


def _events(stream: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for event in stream:
        if event["type"] == "ERROR":
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=int(event["object"].get("code", 500)))
        yield event
