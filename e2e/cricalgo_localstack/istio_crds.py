"""The official Istio CRDs, taken from the `istio.io/api` module on the Go module proxy.

They are generated upstream (`kubernetes/customresourcedefinitions.gen.yaml`) and are not
copied into this repository: the local stack downloads them at setup time.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from .binaries import BuildError

ISTIO_API_VERSION = "v1.30.8"
CRD_FILE = "kubernetes/customresourcedefinitions.gen.yaml"


def istio_crds_path(version: str = ISTIO_API_VERSION) -> Path:
    """Download istio.io/api@version (cached by the go tool) and return its CRD file."""
    with tempfile.TemporaryDirectory(prefix="cricalgo-istio-") as scratch:
        # An empty module so `go mod download` runs outside any project.
        Path(scratch, "go.mod").write_text("module cricalgo.local/istio\n\ngo 1.24\n")
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"istio.io/api@{version}"],
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise BuildError(f"cannot download istio.io/api@{version}: {proc.stderr or proc.stdout}")
    info = json.loads(proc.stdout)
    path = Path(info["Dir"]) / CRD_FILE
    if not path.is_file():
        raise BuildError(f"istio.io/api@{version} has no {CRD_FILE}")
    return path
