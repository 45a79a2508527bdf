"""An inline SVG sparkline of run durations, failed runs marked: no JavaScript, no fonts.

Coordinates are integers in a 10x viewBox: formatting 30 floats per probe for 1,000
probes was half of a page render; integers are ~5x cheaper to format.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from monitor.sinks.history import Run

WIDTH, HEIGHT = 120, 24
SCALE = 10
PAD = 25  # in viewBox units (2.5 px)
TOP, BOTTOM = PAD, HEIGHT * SCALE - PAD
HEAD = (
    f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
    f'viewBox="0 0 {WIDTH * SCALE} {HEIGHT * SCALE}" role="img" aria-label="run durations">'
)


@lru_cache(maxsize=64)
def _xs(count: int) -> tuple[int, ...]:
    step = (WIDTH * SCALE - 2 * PAD) / max(count - 1, 1)
    return tuple(int(PAD + i * step) for i in range(count))


def sparkline(runs: Sequence[Run]) -> str:
    """`<svg>` with a polyline of durations (scaled to the slowest kept run) and a red dot
    per failed run; an empty frame before the first run."""
    if not runs:
        return HEAD + "</svg>"
    top = max(r.duration for r in runs) or 1.0
    span = (BOTTOM - TOP) / top
    points = []
    dots = []
    for x, run in zip(_xs(len(runs)), runs):
        y = int(BOTTOM - span * run.duration)
        points.append(f"{x},{y}")
        if not run.ok:
            dots.append(f'<circle class="fail" cx="{x}" cy="{y}" r="25" fill="#d73a49"/>')
    return (
        f"{HEAD}<title>{len(runs)} runs, slowest {top * 1000:.0f} ms, {len(dots)} failed</title>"
        f'<polyline fill="none" stroke="#0366d6" stroke-width="12" points="{" ".join(points)}"/>'
        f"{''.join(dots)}</svg>"
    )
