"""JSON log lines (pure)."""

from __future__ import annotations

import json
import logging

from cricalgo_workload.logs import JsonFormatter


def render(message: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("cricalgo.workload", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    result: dict[str, object] = json.loads(JsonFormatter().format(record))
    return result


def test_event_and_fields_on_one_json_line() -> None:
    line = render("deposit_task_completed", tx_id="abc", duration_ms=1.5, outcome="credited")
    assert line["event"] == "deposit_task_completed"
    assert (line["tx_id"], line["duration_ms"], line["outcome"]) == ("abc", 1.5, "credited")
    assert line["level"] == "info"


def test_secret_looking_fields_are_dropped() -> None:
    line = render(
        "oops", webhook_secret="whsec_x", api_token="t", webhook_signature="v1,x", dsn="pg://"
    )
    assert not {"webhook_secret", "api_token", "webhook_signature", "dsn"} & set(line)
    assert "whsec_x" not in json.dumps(line)
