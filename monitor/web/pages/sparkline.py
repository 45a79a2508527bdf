"""An inline SVG sparkline of run durations, failed runs marked: no JavaScript, no fonts."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.sinks.history import Run

WIDTH, HEIGHT, PAD = 120, 24, 2.5


def sparkline(runs: Sequence[Run]) -> str:
    """`<svg>` with a polyline of durations (scaled to the slowest kept run) and a red dot
    per failed run; an empty frame before the first run."""
    head = (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="run durations">'
    )
    if not runs:
        return head + "</svg>"
    top = max(r.duration for r in runs) or 1.0
    step = (WIDTH - 2 * PAD) / max(len(runs) - 1, 1)
    points = []
    dots = []
    for i, run in enumerate(runs):
        x = PAD + i * step
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * (run.duration / top)
        points.append(f"{x:.1f},{y:.1f}")
        if not run.ok:
            dots.append(f'<circle class="fail" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#d73a49"/>')
    line = f'<polyline fill="none" stroke="#0366d6" stroke-width="1.2" points="{" ".join(points)}"/>'
    title = f"<title>{len(runs)} runs, slowest {top * 1000:.0f} ms, {len(dots)} failed</title>"
    return head + title + line + "".join(dots) + "</svg>"
