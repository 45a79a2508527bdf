"""Secrets read from files and read again when the file changes (Kubernetes secret rotation).

A mounted Secret is updated in place (the kubelet swaps a symlink), so the value is
re-read whenever the file's identity or mtime changes: one `stat` per request, no
watcher thread. Every value ever read is remembered (bounded) so the log redactor and
the result scrubber mask a rotated secret as well as the one read at start-up.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

# Values kept for redaction: the current and the recent ones of every secret file.
_SEEN_LIMIT = 256
_seen: dict[str, None] = {}
_lock = threading.Lock()
_version = 0


def _remember(value: str) -> None:
    global _version
    if len(value) < 3:
        return
    with _lock:
        if value in _seen:
            return
        _seen[value] = None
        while len(_seen) > _SEEN_LIMIT:
            del _seen[next(iter(_seen))]
        _version += 1


def seen_version() -> int:
    """Changes whenever a new secret value was read (cheap: no lock, no copy)."""
    return _version


def seen_values() -> tuple[int, tuple[str, ...]]:
    """(version, every secret value read from a file so far): the version changes with the set."""
    with _lock:
        return _version, tuple(_seen)


class SecretFileError(OSError):
    """The secret file cannot be read (the message names the file, never its content)."""


class FileSecret:
    """One secret file: `value()` is its current content, stripped of surrounding whitespace."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int, int] | None = None
        self._value = ""
        self.value()  # read now: a missing file is a config error at load, not at the first request

    def value(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                text = self.path.read_text(encoding="utf-8").strip()
                if any(c in text for c in "\r\n\0"):
                    raise SecretFileError(f"{self.path}: a secret must be one line of text (no CR, LF or NUL)")
                self._value, self._stamp = text, stamp
                _remember(text)
        except SecretFileError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            if self._stamp is None:
                raise SecretFileError(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
            # Mid-rotation (the symlink swapped, the file briefly absent): keep the last value.
        return self._value

    def __repr__(self) -> str:  # never the value
        return f"FileSecret({str(self.path)!r})"
