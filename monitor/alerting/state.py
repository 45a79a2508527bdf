"""The alert state file: firing alerts and counters survive a restart of the daemon.

Why a local state file and not reconciliation with Alertmanager (GET /api/v2/alerts at
start): it works the same for webhook-only receivers, which have nothing to ask; it
needs no Alertmanager to be up when the daemon starts; and it also keeps the pending
counters, so a restart neither re-pages an alert that is already firing (it comes back
firing with its original startsAt and is simply re-sent) nor forgets one (a state too
old to trust, or a probe removed while the daemon was down, gets a resolved notice).

Writes are atomic (temp file in the same directory + os.replace), so a crash leaves the
old file or the new one, never half of one. No fsync: the file protects against a
process restart, and after a machine crash a stale file is resolved by age anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class StateFileError(Exception):
    """The state file exists but cannot be used; the engine starts empty."""


def save_state(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"), sort_keys=True)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StateFileError(f"{path} does not hold a JSON object")
    return data
