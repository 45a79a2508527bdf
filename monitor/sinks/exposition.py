"""The /metrics body, joined from the parts each owner declares its metrics in.

Every sink owns its metrics: it declares them in a part of its own (`part()`), and the
fast per-probe series store adds itself with its own renderer. `registry` holds every
part too, so `generate_latest(registry)` and `get_sample_value` see what a scrape sees.

A scrape takes the body as `chunks()`, a list of byte strings the server writes with one
gather write per batch: joining a 20 MB body (1,000 probes) costs a fresh 20 MB buffer
and its page faults per join, which under probe load was half of the scrape's time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector


class Exposition:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._renderers: list[Callable[[], Sequence[bytes]]] = []

    def part(self) -> CollectorRegistry:
        """A registry for one owner's ordinary prometheus-client metrics."""
        part = CollectorRegistry(auto_describe=True)
        self.registry.register(part)
        self._renderers.append(lambda: (generate_latest(part),))
        return part

    def add(self, collector: Collector, render: Callable[[], bytes]) -> None:
        """A collector that renders its own exposition text (cheaper than generate_latest)."""
        self.registry.register(collector)
        self._renderers.append(lambda: (render(),))

    def add_chunks(self, collector: Collector, chunks: Callable[[], Sequence[bytes]]) -> None:
        """As `add`, for a large text kept in pieces: the pieces are written, never joined."""
        self.registry.register(collector)
        self._renderers.append(chunks)

    def chunks(self) -> list[bytes]:
        """The body in order, as the parts' pieces (what a scrape writes)."""
        out: list[bytes] = []
        for render in self._renderers:
            out.extend(render())
        return out

    def render(self) -> bytes:
        return b"".join(self.chunks())


def declare_in(target: CollectorRegistry | Exposition) -> CollectorRegistry:
    """Where an owner declares its metrics: a new part of an exposition, or a plain registry (tests)."""
    return target.part() if isinstance(target, Exposition) else target
