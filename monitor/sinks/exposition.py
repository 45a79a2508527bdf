"""The /metrics body, joined from the parts each owner declares its metrics in.

Every sink owns its metrics: it declares them in a part of its own (`part()`), and the
fast per-probe series store adds itself with its own renderer. `registry` holds every
part too, so `generate_latest(registry)` and `get_sample_value` see what a scrape sees.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector


class Exposition:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._renderers: list[Callable[[], bytes]] = []

    def part(self) -> CollectorRegistry:
        """A registry for one owner's ordinary prometheus-client metrics."""
        part = CollectorRegistry(auto_describe=True)
        self.registry.register(part)
        self._renderers.append(lambda: generate_latest(part))
        return part

    def add(self, collector: Collector, render: Callable[[], bytes]) -> None:
        """A collector that renders its own exposition text (cheaper than generate_latest)."""
        self.registry.register(collector)
        self._renderers.append(render)

    def render(self) -> bytes:
        return b"".join(render() for render in self._renderers)


def declare_in(target: CollectorRegistry | Exposition) -> CollectorRegistry:
    """Where an owner declares its metrics: a new part of an exposition, or a plain registry (tests)."""
    return target.part() if isinstance(target, Exposition) else target
