"""Job logging: plain lines in a terminal, one JSON object per line otherwise (a scheduler's log,
a log shipper).

A record's context goes in ``extra`` under the names of ``CONTEXT`` (job id, request ids, shard
ids, model version, step); the JSON lines carry it as fields, the plain lines as ``key=value``.
Request ids and user keys are pseudonymous by construction; raw user ids never reach a log
call, so nothing here has to redact them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

CONTEXT = ("job_id", "request_ids", "shards", "model_version", "step", "seconds")
FORMATS = ("auto", "text", "json")
QUIET = ("py4j", "ray", "urllib3", "filelock")


def context(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the given context fields (None values dropped)."""
    unknown = set(fields) - set(CONTEXT)
    if unknown:
        raise ValueError(f"unknown log context field(s) {sorted(unknown)}; known: {CONTEXT}")
    return {k: v for k, v in fields.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, msg, the context fields
    present, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in CONTEXT if hasattr(record, k)]
        return f"{line} [{' '.join(extra)}]" if extra else line


def resolve_format(fmt: str, stream: Any = None) -> str:
    """``auto``: text on a terminal, JSON otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


def configure(fmt: str = "auto", *, verbose: bool = False, stream: Any = None) -> str:
    """Set up the root logger for a job; returns the format used."""
    stream = stream or sys.stderr
    used = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if used == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return used
