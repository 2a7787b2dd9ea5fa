"""Logging setup: concise text lines by default, one JSON object per event on request.

Log lines go through tqdm's writer on a terminal so they do not tear the bar. A filter
redacts the API credentials from every record, whatever module logged it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from tqdm import tqdm

SECRET_VARIABLES = ("SCENARIO_SDK_API_KEY", "SCENARIO_SDK_API_SECRET")


class BarSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes through tqdm so that a log line does not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "event", None)
        if isinstance(extra, dict):
            event.update(extra)
        if record.exc_info:
            event["error"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    """Replace credentials wherever they would appear in a log line's message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = _usable(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = redact(message, self._secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then redacts the finished text.

    Redacting the finished line (not just the message) also covers tracebacks, exception
    notes and JSON extras, whatever put the secret there.
    """

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = _usable(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record), self._secrets)


def secrets_from_env(env: Mapping[str, str]) -> list[str]:
    """The credentials in `env`, and the Basic token they make (as it goes on the wire)."""
    key, secret = (env.get(name, "") for name in SECRET_VARIABLES)
    found = [key, secret]
    if key and secret:
        found.append(base64.b64encode(f"{key}:{secret}".encode()).decode())
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _usable(secrets: Iterable[str]) -> list[str]:
    # Longest first, so that a key that is part of the Basic token never leaves half of it.
    return sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)


def configure_logging(*, verbose: int = 0, quiet: bool = False, json_format: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty() and not json_format:
        handler = BarSafeHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    secrets = secrets_from_env(os.environ)
    inner = (
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    handler.setFormatter(RedactingFormatter(inner, secrets))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger("batch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Third-party loggers (aiohttp, tenacity) stay quiet unless asked for.
    logging.getLogger().setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
