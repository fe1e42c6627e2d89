"""JSON logs and CloudWatch Embedded Metric Format.

In Lambda the runtime's own JSON formatter (``logging_config.log_format =
"JSON"``) is installed on the root logger and includes ``extra`` fields as
top-level keys. Anywhere else (tests, the emulator's workers) ``logger()``
installs an equivalent formatter so the lines look the same.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["stackTrace"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def logger(name: str) -> logging.Logger:
    # botocore's INFO lines ("Found credentials in environment variables") are noise
    logging.getLogger("botocore").setLevel(logging.WARNING)
    root = logging.getLogger()
    if not root.handlers:  # not in Lambda (the runtime installs its own handler)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper())
    return logging.getLogger(name)


def emf_line(
    namespace: str,
    dimensions: Mapping[str, str],
    counts: Mapping[str, int | float],
    *,
    milliseconds: Mapping[str, float] | None = None,
    timestamp_ms: int | None = None,
) -> str:
    """A CloudWatch Embedded Metric Format document (one line) for these values."""
    metrics = [{"Name": name, "Unit": "Count"} for name in counts]
    metrics += [{"Name": name, "Unit": "Milliseconds"} for name in (milliseconds or {})]
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            "CloudWatchMetrics": [
                {"Namespace": namespace, "Dimensions": [sorted(dimensions)], "Metrics": metrics}
            ],
        },
        **dimensions,
        **counts,
        **(milliseconds or {}),
    }
    return json.dumps(document, separators=(",", ":"))


def emit_metrics(line: str, stream: IO[str] | None = None) -> None:
    """Write an EMF line to stdout, where Lambda's log agent extracts the metrics."""
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()
