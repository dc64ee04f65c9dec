"""A container's environment and command line, resolved from its pod as a kubelet does.

Pure: Secrets and ConfigMaps come in through a lookup function, so the rules (`value`,
`valueFrom`, `envFrom` with prefixes, `$(VAR)` expansion, later entries winning) are
unit-tested without a cluster.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

# (kind, namespace, name) -> the object's `data` (Secrets: base64 values), or None if absent.
ObjectLookup = Callable[[str, str, str], Mapping[str, str] | None]


class EnvError(ValueError):
    """The pod names something that does not exist (a kubelet's CreateContainerConfigError)."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, the rest stays."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def _field_ref(pod: Mapping[str, Any], path: str, pod_ip: str) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    keyed = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if keyed:
        return str(meta.get(keyed.group(1), {}).get(keyed.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


def _decode(kind: str, value: str) -> str:
    return base64.b64decode(value).decode() if kind == "Secret" else value


def _key_ref(kind: str, ref: Mapping[str, Any], namespace: str, lookup: ObjectLookup) -> str | None:
    data = lookup(kind, namespace, ref["name"])
    if data is None or ref["key"] not in data:
        if ref.get("optional"):
            return None
        what = "key" if data is not None else kind
        raise EnvError(f"{kind} {namespace}/{ref['name']}: {what} {ref['key']!r} not found")
    return _decode(kind, data[ref["key"]])


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    lookup: ObjectLookup,
) -> dict[str, str]:
    """The environment a kubelet would give `container`: `envFrom` first, then `env` in order."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key not in source:
                continue
            ref = source[key]
            data = lookup(kind, namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f"{kind} {namespace}/{ref['name']} not found")
            for key_name, raw in data.items():
                env[prefix + key_name] = _decode(kind, raw)
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = _field_ref(pod, source["fieldRef"]["fieldPath"], pod_ip)
        elif "secretKeyRef" in source:
            value = _key_ref("Secret", source["secretKeyRef"], namespace, lookup)
        elif "configMapKeyRef" in source:
            value = _key_ref("ConfigMap", source["configMapKeyRef"], namespace, lookup)
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def container_argv(
    container: Mapping[str, Any], entrypoint: list[str], env: Mapping[str, str]
) -> list[str]:
    """`command` replaces the image's entrypoint and `args` follow, both `$(VAR)`-expanded."""
    command = [expand(c, env) for c in container.get("command") or []] or list(entrypoint)
    return command + [expand(a, env) for a in container.get("args") or []]
