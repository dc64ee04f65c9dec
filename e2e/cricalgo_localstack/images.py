"""`make images`: the operator's and the workload's images, built here from their Dockerfiles.

No registry answers on the project's machines, so the Dockerfiles' public base
(`python:3.11-slim-bookworm`, the default of their `BASE` argument) cannot be pulled. The base
is then a Debian bookworm root filesystem made here with debootstrap (python3, python3-venv,
ca-certificates) and `docker import`ed, cached on disk keyed by `BASE_VERSION` like the other
builds. The engine is Debian's docker.io (scripts/install-container-runtime.sh).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cricalgo_localstack.binaries import cache_root

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"
PUBLIC_BASE = "python:3.11-slim-bookworm"
# Bump when the debootstrap recipe changes: it names the cached root filesystem and the image.
BASE_VERSION = "bookworm-py311-1"
BASE_IMAGE = f"cricalgo/python-base:{BASE_VERSION}"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROLES = ("operator", "workload")


@dataclass(frozen=True)
class BuiltImage:
    name: str
    seconds: float
    size_bytes: int


def _progress(message: str) -> None:
    print(f"[cricalgo images] {message}", file=sys.stderr, flush=True)


def docker(*args: str, timeout: float = 1800, check: bool = True) -> str:
    """Debian's docker client with the classic builder (no frontend image to pull)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def image_exists(name: str) -> bool:
    return (
        subprocess.run(
            [DOCKER, "image", "inspect", name], capture_output=True, timeout=60
        ).returncode
        == 0
    )


def ensure_engine() -> None:
    """The container runtime installed and dockerd answering (both idempotent)."""
    subprocess.run([str(ROOT / "scripts" / "install-container-runtime.sh")], check=True)


def _base_rootfs() -> Path:
    """The debootstrapped root filesystem as a tarball, built once per machine (~2.5 min)."""
    tarball = cache_root() / "base-image" / BASE_VERSION / "rootfs.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _progress(f"debootstrap bookworm into {tarball.parent} (once per machine)")
    with tempfile.TemporaryDirectory(dir=tarball.parent) as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # What a base image does not need: downloaded packages, package lists, docs.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.name != "lock":
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True
        )
        partial.rename(tarball)
    _progress(f"base root filesystem built in {time.monotonic() - started:.0f} s")
    return tarball


def ensure_local_base() -> str:
    """The local Python 3.11 base image, imported from the cached root filesystem."""
    if not image_exists(BASE_IMAGE):
        tarball = _base_rootfs()
        docker("import", "--change", f"ENV PATH={DEFAULT_PATH}", str(tarball), BASE_IMAGE)
    return BASE_IMAGE


def choose_base() -> str:
    """The public base when it is here or a registry hands it over, else the local one."""
    if image_exists(PUBLIC_BASE):
        return PUBLIC_BASE
    try:
        pulled = subprocess.run(
            [DOCKER, "pull", "-q", PUBLIC_BASE], capture_output=True, timeout=60
        ).returncode
    except subprocess.TimeoutExpired:
        pulled = 1
    return PUBLIC_BASE if pulled == 0 else ensure_local_base()


WHEELHOUSE = ROOT / "build" / "wheelhouse"


def prepare_wheelhouse() -> Path:
    """Every pinned dependency of both roles, and the build backend, as wheels on the host
    (with the host's package index settings): the image builds then reach no index."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "-q",
            "-c", str(ROOT / "constraints.txt"),
            "-w", str(WHEELHOUSE),
            f"{ROOT}[{','.join(ROLES)}]", "setuptools>=75", "wheel",
            # redis needs it below Python 3.11.3 (Debian bookworm's is 3.11.2), the host not,
            # so constraints.txt cannot pin it.
            "async-timeout==5.0.1",
        ],
        check=True,
        timeout=1800,
    )  # fmt: skip
    # The product's own wheel holds both packages; each image builds only its own.
    for own in WHEELHOUSE.glob("cricalgo-*.whl"):
        own.unlink()
    return WHEELHOUSE


def image_name(role: str, tag: str) -> str:
    return f"cricalgo/{role}:{tag}"


def build_image(role: str, tag: str, base: str) -> BuiltImage:
    name = image_name(role, tag)
    started = time.monotonic()
    _progress(f"building {name} on {base}")
    docker(
        "build",
        "-q",
        # A failed step's container goes too: nothing is left behind.
        "--force-rm",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        "WHEELHOUSE_ONLY=1",
        "-f",
        str(ROOT / role / "Dockerfile"),
        "-t",
        name,
        str(ROOT),
    )
    seconds = time.monotonic() - started
    size = int(docker("image", "inspect", "--format", "{{.Size}}", name).strip())
    return BuiltImage(name, seconds, size)


def build_images(tag: str, base: str | None = None) -> list[BuiltImage]:
    """Both images (a warm rebuild is Docker's layer cache: seconds)."""
    ensure_engine()
    base = base or choose_base()
    prepare_wheelhouse()
    return [build_image(role, tag, base) for role in ROLES]


PROBE_IMAGE = "cricalgo/probe:v1"


def build_probe_image(base: str | None = None) -> str:
    """The local stack's test server (`probe_server.py`, standard library only) as an image,
    for the real node, which runs images where the local node runs commands."""
    base = base or choose_base()
    with tempfile.TemporaryDirectory(prefix="cricalgo-probe-") as context:
        shutil.copy(Path(__file__).with_name("probe_server.py"), context)
        (Path(context) / "Dockerfile").write_text(
            f"FROM {base}\n"
            "COPY probe_server.py /probe/probe_server.py\n"
            "USER 65534:65534\n"
            'ENTRYPOINT ["python3", "/probe/probe_server.py"]\n'
        )
        docker("build", "-q", "--force-rm", "-t", PROBE_IMAGE, context)
    return PROBE_IMAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cricalgo_localstack.images")
    parser.add_argument("--tag", default="dev")
    parser.add_argument(
        "--base", default=None, help=f"base image (default: {PUBLIC_BASE} or local)"
    )
    args = parser.parse_args(argv)
    for image in build_images(args.tag, args.base):
        print(f"{image.name}: {image.size_bytes / 1e6:.0f} MB, built in {image.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
