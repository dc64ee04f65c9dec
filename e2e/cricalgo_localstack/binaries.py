"""Build the Kubernetes control-plane binaries and etcd from the Go module proxy.

There is no container runtime on the project's machines and no download site other than
the package registries, so the local stack builds real upstream binaries with `go build`.

`k8s.io/kubernetes` declares its staging modules (`k8s.io/api`, `k8s.io/client-go`, ...) at
v0.0.0 and points them at `./staging` with `replace` directives, which only work inside its
own repository. A small generated wrapper module requires `k8s.io/kubernetes vX.Y.Z` and
replaces each staging module with its published `v0.Y.Z`; the same trick works for etcd,
whose server module replaces its sibling modules with relative paths.

Binaries are cached on disk keyed by version (see `cache_root`), built once per machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

KUBERNETES_VERSION = "v1.34.0"
ETCD_VERSION = "v3.6.5"
# Helm 3.19 is built against the Kubernetes 1.34 client libraries.
HELM_VERSION = "v3.19.5"
# Prometheus 3.16 (its Go module is versioned v0.3xx). Debian's prometheus is built without
# Kubernetes service discovery, which the local stack needs to find pods like a cluster does.
PROMETHEUS_VERSION = "v0.316.0"
# The etcd release Kubernetes 1.34 is tested with is 3.6.x; Debian's etcd-server is 3.4.

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The real node's binaries, built only by the stacks that run one, into the same cache
# directory (and with the same module and build cache) as the control plane.
NODE_COMMANDS = ("kubelet", "kube-proxy")


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the go tool's output tail."""


@dataclass(frozen=True)
class Toolchain:
    """Paths to every binary the local control plane runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path


def cache_root() -> Path:
    """Where built binaries live: `$CRICALGO_CACHE`, else `$XDG_CACHE_HOME/cricalgo`."""
    explicit = os.environ.get("CRICALGO_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "cricalgo"


def _progress(message: str) -> None:
    print(f"[cricalgo build] {message}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "CGO_ENABLED": "0"}
    if env:
        full_env.update(env)
    proc = subprocess.run(
        ["go", *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-40:])
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n{tail}")
    return proc.stdout


def _module_gomod(cwd: Path, module: str, version: str) -> str:
    """Download a module through the proxy and return its go.mod text."""
    info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], cwd))
    if "Error" in info:
        raise BuildError(f"cannot download {module}@{version}: {info['Error']}")
    return Path(info["GoMod"]).read_text()


def staging_replacements(gomod_text: str, version: str) -> dict[str, str]:
    """Map each module the go.mod replaces with a relative path to its published version.

    For Kubernetes `vX.Y.Z` the staging modules are published as `v0.Y.Z`; for etcd the
    sibling modules share the server's version.
    """
    published = version
    if version.startswith("v1."):
        published = "v0." + version.split(".", 1)[1]
    local = re.findall(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+\.\.?/\S+\s*$", gomod_text, re.MULTILINE)
    # Only modules the main module actually requires: etcd also "replaces" modules it
    # forbids (`=> ./FORBIDDEN_DEPENDENCY`), which must stay out of the build.
    required = set(re.findall(r"^\s*(?:require\s+)?(\S+)\s+v\S+", gomod_text, re.MULTILINE))
    return {module: published for module in local if module in required}


def render_wrapper_gomod(
    main_module: str, version: str, replacements: dict[str, str], go_directive: str
) -> str:
    """The go.mod of a wrapper module that builds commands from `main_module`."""
    lines = [
        "module cricalgo.local/build",
        "",
        f"go {go_directive}",
        "",
        f"require {main_module} {version}",
        "",
    ]
    for module, published in sorted(replacements.items()):
        lines.append(f"replace {module} => {module} {published}")
    return "\n".join(lines) + "\n"


def _build(
    name: str,
    main_module: str,
    version: str,
    packages: dict[str, str],
    ldflags: str,
    tags: str = "",
) -> dict[str, Path]:
    """Build `packages` (output name -> package path) once; return their cached paths."""
    root = cache_root() / name / version
    bindir = root / "bin"
    outputs = {out: bindir / out for out in packages}
    if all(p.exists() for p in outputs.values()):
        return outputs
    root.mkdir(parents=True, exist_ok=True)
    # Two runs on one machine (make test beside make demo, or a second checkout) must not
    # build the same thing twice at once: the second waits for the first, then finds it.
    with (root / ".build.lock").open("w") as lock:
        if not _try_lock(lock):
            _progress(f"waiting for another run that is building {name} {version}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        missing = {out: pkg for out, pkg in packages.items() if not outputs[out].exists()}
        if missing:
            _build_locked(name, main_module, version, missing, ldflags, tags, root)
    return outputs


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _build_locked(
    name: str,
    main_module: str,
    version: str,
    packages: dict[str, str],
    ldflags: str,
    tags: str,
    root: Path,
) -> None:
    bindir = root / "bin"
    workdir = root / "wrapper"
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _progress(f"building {name} {version} from the Go module proxy into {bindir}")
    _progress("a cold build takes several minutes on 2 cores; it runs once per machine")
    (workdir / "go.mod").write_text("module cricalgo.local/build\n\ngo 1.24\n")
    gomod = _module_gomod(workdir, main_module, version)
    go_directive = re.search(r"^go\s+(\S+)", gomod, re.MULTILINE)
    replacements = staging_replacements(gomod, version)
    (workdir / "go.mod").write_text(
        render_wrapper_gomod(
            main_module, version, replacements, go_directive.group(1) if go_directive else "1.24"
        )
    )
    (workdir / "go.sum").unlink(missing_ok=True)
    # Each binary is written beside the others and renamed into place when complete, so a
    # later call can add commands (the node's) to a directory that already holds some.
    staging = root / "bin.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    bindir.mkdir(exist_ok=True)
    for out, package in packages.items():
        _progress(f"  go build {package} ({time.monotonic() - started:.0f}s so far)")
        output = str(staging / out)
        _go(
            ["build", "-trimpath", f"-tags={tags}", "-ldflags", ldflags, "-o", output, package],
            workdir,
        )
        (staging / out).rename(bindir / out)
    shutil.rmtree(staging, ignore_errors=True)
    _progress(f"built {name} {version} in {time.monotonic() - started:.0f}s")


def _kubernetes_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def ensure_toolchain(
    kubernetes_version: str = KUBERNETES_VERSION, etcd_version: str = ETCD_VERSION
) -> Toolchain:
    """Return the binaries, building whatever is not cached yet."""
    if shutil.which("go") is None:
        raise BuildError("the go tool is not on PATH; it is needed to build Kubernetes")
    etcd = _build(
        "etcd",
        "go.etcd.io/etcd/server/v3",
        etcd_version,
        {"etcd": "go.etcd.io/etcd/server/v3"},
        "-s -w",
    )
    kube = _build(
        "kubernetes",
        "k8s.io/kubernetes",
        kubernetes_version,
        {cmd: f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBERNETES_COMMANDS},
        _kubernetes_ldflags(kubernetes_version),
    )
    return Toolchain(
        etcd=etcd["etcd"],
        kube_apiserver=kube["kube-apiserver"],
        kube_controller_manager=kube["kube-controller-manager"],
        kube_scheduler=kube["kube-scheduler"],
        kubectl=kube["kubectl"],
    )


@dataclass(frozen=True)
class NodeBinaries:
    """Paths to the binaries a real node runs beside containerd."""

    kubelet: Path
    kube_proxy: Path


def ensure_node_binaries(kubernetes_version: str = KUBERNETES_VERSION) -> NodeBinaries:
    """Return kubelet and kube-proxy from the control plane's module, building them if needed."""
    if shutil.which("go") is None:
        raise BuildError("the go tool is not on PATH; it is needed to build the kubelet")
    built = _build(
        "kubernetes",
        "k8s.io/kubernetes",
        kubernetes_version,
        {cmd: f"k8s.io/kubernetes/cmd/{cmd}" for cmd in NODE_COMMANDS},
        _kubernetes_ldflags(kubernetes_version),
    )
    return NodeBinaries(kubelet=built["kubelet"], kube_proxy=built["kube-proxy"])


def _helm_ldflags(version: str) -> str:
    # Helm's own Makefile stamps the Kubernetes minor it was built against; without it
    # `helm template` and `helm lint` assume Kubernetes 1.20.
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def ensure_helm(version: str = HELM_VERSION) -> Path:
    """Return the helm binary, building it from the Go module proxy if it is not cached."""
    if shutil.which("go") is None:
        raise BuildError("the go tool is not on PATH; it is needed to build helm")
    built = _build(
        "helm",
        "helm.sh/helm/v3",
        version,
        {"helm": "helm.sh/helm/v3/cmd/helm"},
        _helm_ldflags(version),
    )
    return built["helm"]


def prometheus_release(module_version: str = PROMETHEUS_VERSION) -> str:
    """The Prometheus release a module version stands for: v0.316.0 is 3.16.0."""
    minor, patch = module_version.lstrip("v").split(".")[1:3]
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


def ensure_prometheus(version: str = PROMETHEUS_VERSION) -> Path:
    """Return a Prometheus with Kubernetes and file service discovery, building it if needed."""
    if shutil.which("go") is None:
        raise BuildError("the go tool is not on PATH; it is needed to build Prometheus")
    release = prometheus_release(version)
    built = _build(
        "prometheus",
        "github.com/prometheus/prometheus",
        version,
        {"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
        f"-s -w -X github.com/prometheus/common/version.Version={release}",
        # Only the discovery mechanisms the stack uses: a smaller, faster build.
        tags="remove_all_sd,enable_kubernetes_sd",
    )
    return built["prometheus"]


def main(argv: list[str] | None = None) -> int:
    """`python -m cricalgo_localstack.binaries [--helm|--node]`: build (or find) the toolchain."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if "--helm" in args:
            print(f"helm: {ensure_helm()}")
            return 0
        if "--node" in args:
            for field, path in vars(ensure_node_binaries()).items():
                print(f"{field}: {path}")
            return 0
        toolchain = ensure_toolchain()
        print(f"prometheus: {ensure_prometheus()}")
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for field, path in vars(toolchain).items():
        print(f"{field}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
