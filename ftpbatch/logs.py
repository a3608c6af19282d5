"""Structured logs: readable text by default, one JSON object a line with ``--log-json``.

Batch lifecycle events (received, processing, rejected, dispatching,
complete) are logged once each, through :func:`batch_event`, by
the code that made the transition happen, with the batch's id and product
as fields, so ``jq 'select(.batch == "01H...")'`` follows one file.

Passwords never reach a log line: URLs are logged through
:func:`redact_url`, and a filter on the handler scrubs ``user:password@``
and ``password=...`` from any message as a last line of defence.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

BATCH_LOGGER = "ftpbatch.batch"

#: Lifecycle event names, in the order a batch goes through them (rejected instead of dispatching).
RECEIVED, PROCESSING, REJECTED, DISPATCHING, COMPLETE = ("received", "processing", "rejected", "dispatching", "complete")
CHECKED, PAUSED, RESUMED, CANCELLED = ("checked", "paused", "resumed", "cancelled")

_batch_log = logging.getLogger(BATCH_LOGGER)

# scheme://user:secret@host  and  password=secret / "password": "secret"
_URL_SECRET = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@\s/]*)@")
_KEY_SECRET = re.compile(r"(?P<head>\b(?:password|passwd|pass|secret)\b[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s&\"',;]+)", re.I)

# LogRecord attributes that are not extra fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """``text`` with anything that looks like a password replaced by ``***``."""
    text = _URL_SECRET.sub(lambda m: f"{m['head']}:***@", text)
    return _KEY_SECRET.sub(lambda m: f"{m['head']}***", text)


def redact_url(url: str) -> str:
    """A URL fit for logs and status output: the password (if any) becomes ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.password is None:
        return redact(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return redact(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


def batch_event(event: str, batch: str, product: str, **fields: Any) -> None:
    """Log one batch lifecycle event: ``batch received 01H... product=acme file=x.csv``."""
    if not _batch_log.isEnabledFor(logging.INFO):
        return
    text = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
    _batch_log.info(
        "batch %s %s product=%s%s",
        event,
        batch,
        product,
        f" {text}" if text else "",
        extra={"event": event, "batch": batch, "product": product, "fields": fields},
    )


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c.isspace() or c == '"' for c in text)) else text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "fields":
                document[key] = value
        if isinstance(fields, dict):
            for key, value in fields.items():
                document.setdefault(key, value)
        if record.exc_info:
            document["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(document, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return redact(super().formatException(ei))


def configure(json_lines: bool = False, level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send ftpbatch's logs to ``stream`` (stderr) as text or JSON lines; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ftpbatch", False)]:
        root.removeHandler(old)
    handler._ftpbatch = True  # type: ignore[attr-defined]  # a mark to find our own handler again
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    return handler
