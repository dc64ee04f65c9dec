"""The worker pod's `/healthz` and `/readyz`, served on its metrics port.

About the process itself, as for the webhook: alive while Dramatiq's consumer and worker
threads run (a process whose threads died consumes nothing and must be restarted), ready
while it is alive, started and not stopping, with its pool open. Redis or PostgreSQL
being away is not the pod's fault: messages wait in Redis, tasks retry with backoff, and
a restart would not bring either back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import dramatiq


class _Pool(Protocol):
    @property
    def closed(self) -> bool: ...


def threads_alive(worker: dramatiq.Worker | None) -> tuple[bool, Mapping[str, Any]]:
    """(alive, details) of a started Dramatiq worker's consumer and worker threads."""
    if worker is None:
        return False, {"threads": "not started"}
    threads = [*worker.consumers.values(), *worker.workers]
    dead = sum(1 for thread in threads if not thread.is_alive())
    if not threads or dead:
        return False, {"threads": f"{dead} of {len(threads)} dead"}
    return True, {"threads": "ok"}


def worker_ready(
    worker: dramatiq.Worker | None, stopping: bool, pool: _Pool
) -> tuple[bool, Mapping[str, Any]]:
    """(ready, checks) of the worker process."""
    alive, details = threads_alive(worker)
    checks = {
        "started": "stopping" if stopping else ("ok" if worker is not None else "starting"),
        "threads": details["threads"],
        "pool": "closed" if pool.closed else "ok",
    }
    return alive and all(v == "ok" for v in checks.values()), {"checks": checks}
