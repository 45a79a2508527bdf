"""Which fleet members run which probe: rendezvous (highest random weight) hashing.

Pure functions, no state. Every member computes the same answer from the probe name and
the member count alone, so no coordination is needed, and changing the count from N to
N+1 moves only the probes the new member now wins (about K/(N+1) of them); the others
keep their members, their series and their alert state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

_ORDINAL = re.compile(r"-(\d+)$")


def weight(probe: str, member: int) -> int:
    """A stable pseudo-random weight of (probe, member); the same on every host and run."""
    digest = hashlib.blake2b(f"{member}\x00{probe}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owners(probe: str, count: int, replicas_per_probe: int) -> list[int]:
    """The `replicas_per_probe` members (of 0..count-1) that run `probe`, best first."""
    if count < 1:
        raise ValueError("count must be at least 1")
    k = min(max(replicas_per_probe, 1), count)
    ranked = sorted(range(count), key=lambda member: (weight(probe, member), member), reverse=True)
    return sorted(ranked[:k])


def assignment(probes: Iterable[str], count: int, replicas_per_probe: int) -> dict[str, list[int]]:
    """Every probe with the members that run it."""
    return {probe: owners(probe, count, replicas_per_probe) for probe in probes}


def probes_of(member: int, probes: Sequence[str], count: int, replicas_per_probe: int) -> list[str]:
    """The probes `member` runs, in configured order."""
    return [p for p in probes if member in owners(p, count, replicas_per_probe)]


def ordinal(name: str) -> int | None:
    """The StatefulSet ordinal of a pod name (`synthetic-monitor-2` -> 2), or None."""
    found = _ORDINAL.search(name or "")
    return int(found.group(1)) if found else None
