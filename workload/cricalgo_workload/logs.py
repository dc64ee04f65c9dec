"""JSON log lines: one object per line with the event name and its fields.

Fields come from `extra=`; the formatter drops anything whose key looks like a secret so a
careless `extra` cannot leak one.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "token", "password", "signature", "authorization", "dsn")


class JsonFormatter(logging.Formatter):
    """One JSON object per record. It runs once per deposit in the webhook, so it caches
    what repeats: the timestamp's seconds and which field names look like secrets."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")
        self._secret_keys: dict[str, bool] = {}

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = self._second  # one read: other threads may replace it meanwhile
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def _is_secret(self, key: str) -> bool:
        secret = self._secret_keys.get(key)
        if secret is None:
            secret = any(word in key.lower() for word in _SECRET_WORDS)
            self._secret_keys[key] = secret
        return secret

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or self._is_secret(key):
                continue
            entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
