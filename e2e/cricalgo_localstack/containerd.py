"""The real node's container runtime: Debian's containerd 1.6 and runc, on a socket and in
directories of its own (Docker's engine and its containerd are left alone).

No registry answers here, so every image the node runs reaches containerd's `k8s.io`
namespace from Docker (`docker save | ctr images import`), including the sandbox ("pause")
image, which is a few lines of C built here with `gcc -static`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .images import DOCKER, docker, image_exists
from .processes import ManagedProcess, pid_alive

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
CNI_BIN_DIR = "/usr/lib/cni"
# Bump when PAUSE_SOURCE changes.
PAUSE_IMAGE = "cricalgo/pause:1"
# What a sandbox's first process must do: hold the pod's namespaces, reap orphans (it is
# PID 1 when the pod shares its process namespace), and exit on SIGTERM or SIGINT.
PAUSE_SOURCE = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
static void quit(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


def ensure_pause_image() -> str:
    """The sandbox image in Docker, built once per machine (a static binary, ~800 kB)."""
    if image_exists(PAUSE_IMAGE):
        return PAUSE_IMAGE
    with tempfile.TemporaryDirectory(prefix="cricalgo-pause-") as work:
        binary = Path(work) / "pause"
        subprocess.run(
            ["gcc", "-static", "-O2", "-s", "-x", "c", "-o", str(binary), "-"],
            input=PAUSE_SOURCE,
            text=True,
            check=True,
            capture_output=True,
        )
        tarball = Path(work) / "pause.tar"
        subprocess.run(
            ["tar", "--owner=0", "--group=0", "-C", work, "-cf", str(tarball), "pause"],
            check=True,
        )
        docker(
            "import",
            "--change",
            'ENTRYPOINT ["/pause"]',
            "--change",
            "USER 65535:65535",
            str(tarball),
            PAUSE_IMAGE,
        )
    return PAUSE_IMAGE


def render_containerd_config(state_dir: Path, cni_conf_dir: Path) -> str:
    """containerd's config (format 2, containerd 1.6) for a kubelet on this machine."""
    return f"""version = 2
root = "{state_dir / "root"}"
state = "{state_dir / "state"}"
oom_score = 0

[grpc]
  address = "{state_dir / "containerd.sock"}"

[ttrpc]
  address = "{state_dir / "containerd.ttrpc.sock"}"

[debug]
  level = "warn"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/{PAUSE_IMAGE}"
  # oom_score_adj cannot be lowered here, even by root: without this every sandbox fails
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir}"
"""


@dataclass
class Containerd:
    """containerd with its own socket and directories under `state_dir`."""

    state_dir: Path
    cni_conf_dir: Path
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def socket(self) -> Path:
        return self.state_dir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 300) -> str:
        proc = subprocess.run(
            [CTR, "--address", str(self.socket), "--namespace", "k8s.io", *args],
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.decode()[-2000:]}")
        return proc.stdout.decode()

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "config.toml"
        config.write_text(render_containerd_config(self.state_dir, self.cni_conf_dir))
        self.process = ManagedProcess(
            "containerd",
            [CONTAINERD, "--config", str(config)],
            self.state_dir / "containerd.log",
            stop_grace=20,
        )
        self.process.start()
        self.process.wait_ready(lambda: bool(self.ctr("version", timeout=5)), 60)

    def load_images(self, *names: str) -> None:
        """Copy images from Docker into the `k8s.io` namespace (the kubelet's)."""
        for name in names:
            saved = subprocess.run(
                [DOCKER, "save", name], capture_output=True, check=True, timeout=600
            ).stdout
            self.ctr("images", "import", "-", input=saved, timeout=600)

    def remove_everything(self) -> None:
        """Kill and delete every task and container left in its namespace (after the kubelet
        stopped), so no shim outlives the runtime."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            for line in self.ctr("tasks", "ls", "-q", timeout=30).split():
                with contextlib.suppress(RuntimeError):
                    self.ctr("tasks", "kill", "-s", "SIGKILL", line, timeout=30)
            for container in self.ctr("containers", "ls", "-q", timeout=30).split():
                with contextlib.suppress(RuntimeError):
                    self.ctr("tasks", "rm", "-f", container, timeout=30)
                with contextlib.suppress(RuntimeError):
                    self.ctr("containers", "rm", container, timeout=30)

    def stop(self) -> None:
        if self.process is None:
            return
        self.remove_everything()
        self.process.stop()
        self.process = None
        for pid in shim_pids(self.socket):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(p) for p in shim_pids(self.socket)):
            time.sleep(0.1)


def shim_pids(socket: Path) -> list[int]:
    """The runc shims this containerd started: their command line names its socket."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            found.append(int(entry.name))
    return found
