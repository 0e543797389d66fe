"""Logging set-up: one filter stamps run_id/agent/generation; JSON when not on a TTY."""

from __future__ import annotations

import contextvars
import json
import logging
import time

_fields: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar("torpor_log_fields", default={})
_STAMPED = ("run_id", "agent", "generation")


def bind(**fields: object) -> contextvars.Token[dict[str, object]]:
    """Stamp ``fields`` on every log record made in this context (thread/task)."""
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _fields.set(merged)


class _StampFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _STAMPED:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        tags = " ".join(f"{k}={getattr(record, k)}" for k in _STAMPED if hasattr(record, k))
        return f"{base} [{tags}]" if tags else base


def setup_logging(*, level: int = logging.INFO, json_logs: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_StampFilter())
    if json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.DEBUG, level))
