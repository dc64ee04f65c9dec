"""JSON log lines: one object per line with the event name and its fields.

Fields come from `extra=`; the formatter drops anything whose key looks like a secret so a
careless `extra` cannot leak one.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "token", "password", "signature", "authorization", "dsn")
# Datetimes and dataclasses go through `str`, as with the standard library's encoder.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _dumps(entry: dict[str, object]) -> str:
    """orjson (a tenth of `json.dumps`' cost: this runs once per deposit), falling back to
    the standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(entry, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. It runs once per deposit in the webhook, so it caches
    what repeats: the timestamp's seconds and which field names look like secrets."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")
        # Per field name: is it left out (a LogRecord attribute, private, or secret-looking)?
        self._skipped: dict[str, bool] = {}

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = self._second  # one read: other threads may replace it meanwhile
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def _is_skipped(self, key: str) -> bool:
        skipped = self._skipped.get(key)
        if skipped is None:
            lowered = key.lower()
            skipped = (
                key in _STANDARD
                or key.startswith("_")
                or any(word in lowered for word in _SECRET_WORDS)
            )
            self._skipped[key] = skipped
        return skipped

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        skipped = self._skipped
        for key, value in vars(record).items():
            # One dict lookup per field once its name has been seen.
            if skipped.get(key) is False or not self._is_skipped(key):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _dumps(entry)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
