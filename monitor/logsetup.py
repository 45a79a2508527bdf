"""structlog set-up: JSON lines (or a console view on a TTY), with secrets scrubbed.

The redactor is the last line of defence: whatever reaches a log line (an error text
quoting a URL, a traceback) has known secret values, URL userinfo and Authorization
values replaced before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from monitor.http.secrets import seen_values, seen_version

_USERINFO = re.compile(r"(?<=//)[^/\s@]+@")
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
MASK = "***"
_SCALARS = frozenset({int, float, bool, type(None)})


class Redactor:
    """A structlog processor and a plain string scrubber for known secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._static = {s for s in secrets if s and len(s) >= 3}
        self._file_version = -1
        self.secrets: list[str] = []
        self._refresh()

    def _refresh(self) -> None:
        """Add what secret files held since (a rotated secret is masked like the first one)."""
        if seen_version() == self._file_version:
            return
        version, values = seen_values()
        if version != self._file_version:
            self._file_version = version
            self.secrets = sorted(self._static | set(values), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        self._refresh()
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        # The regexes only where they can match: most log strings are short names.
        if "@" in text:
            text = _USERINFO.sub(MASK + "@", text)
        lowered = text.lower()
        if "bearer" in lowered or "basic" in lowered:
            text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {MASK}", text)
        return text

    def _walk(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self.scrub(value)
        if kind in _SCALARS:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v) for v in value]
        return value

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        return {k: self._walk(v) for k, v in event_dict.items()}


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    redactor = Redactor(secrets)
    renderer: Any = structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return redactor
