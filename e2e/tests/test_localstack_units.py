"""Pure pieces of the local stack: the wrapper module, kubeconfigs, Prometheus config."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest
from cricalgo_localstack import binaries
from cricalgo_localstack.binaries import render_wrapper_gomod, staging_replacements
from cricalgo_localstack.kubeconfig import render_kubeconfig
from cricalgo_localstack.services import PrometheusServer

KUBERNETES_GOMOD = """\
module k8s.io/kubernetes

go 1.24.0

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
)
"""

ETCD_GOMOD = """\
module go.etcd.io/etcd/server/v3

require (
\tgo.etcd.io/etcd/api/v3 v3.6.5
\tgo.etcd.io/etcd/client/v3 v3.6.5
)

replace (
\tgo.etcd.io/etcd/api/v3 => ../api
\tgo.etcd.io/etcd/client/v3 => ../client/v3
)

replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
"""


def test_kubernetes_staging_modules_map_to_published_v0_minor() -> None:
    assert staging_replacements(KUBERNETES_GOMOD, "v1.34.0") == {
        "k8s.io/api": "v0.34.0",
        "k8s.io/client-go": "v0.34.0",
    }


def test_etcd_siblings_keep_the_server_version_and_forbidden_modules_stay_out() -> None:
    assert staging_replacements(ETCD_GOMOD, "v3.6.5") == {
        "go.etcd.io/etcd/api/v3": "v3.6.5",
        "go.etcd.io/etcd/client/v3": "v3.6.5",
    }


def test_wrapper_gomod_requires_the_main_module_and_replaces_each_staging_module() -> None:
    text = render_wrapper_gomod("k8s.io/kubernetes", "v1.34.0", {"k8s.io/api": "v0.34.0"}, "1.24.0")
    assert "require k8s.io/kubernetes v1.34.0" in text
    assert "replace k8s.io/api => k8s.io/api v0.34.0" in text
    assert "go 1.24.0" in text


def test_kubeconfig_with_certificate_and_with_token() -> None:
    ca = Path("/pki/ca.crt")
    by_cert = render_kubeconfig(
        "https://127.0.0.1:6443", ca, client_cert=Path("/a.crt"), client_key=Path("/a.key")
    )
    assert by_cert["users"][0]["user"] == {"client-certificate": "/a.crt", "client-key": "/a.key"}
    assert by_cert["clusters"][0]["cluster"]["certificate-authority"] == str(ca)
    by_token = render_kubeconfig("https://127.0.0.1:6443", ca, token="abc", user="sa")
    assert by_token["users"] == [{"name": "sa", "user": {"token": "abc"}}]
    with pytest.raises(ValueError, match="certificate and key, or a token"):
        render_kubeconfig("https://127.0.0.1:6443", ca, client_cert=Path("/a.crt"))


def test_prometheus_config_discovers_pods_only_with_a_cluster(tmp_path: Path) -> None:
    bare = PrometheusServer(tmp_path).render_config()
    jobs = [job["job_name"] for job in bare["scrape_configs"]]  # type: ignore[attr-defined]
    assert jobs == ["file"]
    with_cluster = PrometheusServer(
        tmp_path,
        kubernetes={"server": "https://x", "ca_file": "c", "cert_file": "k", "key_file": "y"},
    ).render_config()
    pods = with_cluster["scrape_configs"][1]  # type: ignore[index]
    assert pods["kubernetes_sd_configs"][0]["role"] == "pod"
    targets = {rule.get("target_label") for rule in pods["relabel_configs"]}
    assert {"track", "version", "app", "namespace", "pod"} <= targets


def test_a_second_build_of_the_same_binaries_waits_for_the_first_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs that both lack a binary build it once: the second waits on the first's lock
    and then finds the binary instead of running `go build` itself."""
    monkeypatch.setenv("CRICALGO_CACHE", str(tmp_path))
    built: list[str] = []
    monkeypatch.setattr(binaries, "_go", lambda args, cwd, env=None: built.append(args[0]) or "")
    root = tmp_path / "tool" / "v1"
    root.mkdir(parents=True)
    result: dict[str, Path] = {}
    with (root / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        second = threading.Thread(
            target=lambda: result.update(
                binaries._build("tool", "example.com/tool", "v1", {"tool": "example.com/tool"}, "")
            )
        )
        second.start()
        second.join(0.5)
        assert second.is_alive(), "the second build did not wait for the first"
        (root / "bin").mkdir()
        (root / "bin" / "tool").write_text("built by the first run")
    second.join(10)
    assert result == {"tool": root / "bin" / "tool"}
    assert built == []


def test_a_later_build_adds_commands_beside_the_cached_ones_without_rebuilding_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's kubelet and kube-proxy join the control plane's binaries in one cache
    directory: building them leaves the others in place and builds only what is missing."""
    monkeypatch.setenv("CRICALGO_CACHE", str(tmp_path))
    monkeypatch.setattr(binaries, "_module_gomod", lambda cwd, module, version: "go 1.24\n")
    built: list[str] = []

    def go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        if args[0] == "build":
            Path(args[args.index("-o") + 1]).write_text(args[-1])
            built.append(args[-1])
        return ""

    monkeypatch.setattr(binaries, "_go", go)
    first = binaries._build("kube", "example.com/kube", "v1", {"api": "example.com/api"}, "")
    second = binaries._build(
        "kube", "example.com/kube", "v1", {"api": "example.com/api", "node": "example.com/node"}, ""
    )
    assert built == ["example.com/api", "example.com/node"]
    assert first["api"].read_text() == "example.com/api"
    assert second["node"].read_text() == "example.com/node"
    assert sorted(p.name for p in first["api"].parent.iterdir()) == ["api", "node"]
