"""Whether an operator restart has anything to do for a CR (pure).

On a restart Kopf resumes every CR. A CR whose last reconciliation handled its current
generation, that runs no canary, and whose rendered children all exist needs no write:
drift in an existing child is repaired by the child watchers, which see every child when
they start. Re-applying anyway would cost one request per child per CR at every restart.
"""

from __future__ import annotations

from collections.abc import Collection

from .children import child_id
from .model import Cad
from .render import render
from .stable_env import has_literal_env

# Initializing: reconciled, waiting for pods (the readiness watcher moves it on).
SETTLED_PHASES = ("Initializing", "Ready", "RolledBack")


def settled(cad: Cad, present: Collection[str]) -> bool:
    """True if `cad` is reconciled and each child it renders is in `present` ("Kind/name")."""
    status = cad.status
    if status.get("observedGeneration") != cad.generation:
        return False
    if status.get("phase") not in SETTLED_PHASES:
        return False
    if has_literal_env(status.get("stableSpec")):
        return False  # its env values move to a Secret (stable_env.py)
    wanted = [child_id(m) for m in render(cad)]
    if sorted(status.get("children") or []) != sorted(wanted):
        return False  # something is left to prune
    return all(child in present for child in wanted)
