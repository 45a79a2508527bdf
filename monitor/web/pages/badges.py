"""Shields-style SVG badges (the gatus and Uptime Kuma convention): status and uptime.

Text width is estimated (about 6.5 px a character at 11 px Verdana, as shields.io's
static badges do) so no font is needed on the server; the label is escaped.
"""

from __future__ import annotations

from html import escape

COLORS = {
    "passing": "#2ea44f",
    "failing": "#cf222e",
    "maintenance": "#8250df",
    "unknown": "#9f9f9f",
}


def _width(text: str) -> int:
    return int(len(text) * 6.5 + 10)


def badge(label: str, value: str, color: str) -> str:
    left, right = _width(label), _width(value)
    total = left + right
    lx, rx = left / 2, left + right / 2
    lab, val = escape(label, quote=True), escape(value, quote=True)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{lab}: {val}"><title>{lab}: {val}</title>'
        f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        f'<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{color}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lx:.1f}" y="14">{lab}</text><text x="{rx:.1f}" y="14">{val}</text></g></svg>'
    )


def status_badge(probe: str, state: str) -> str:
    return badge(probe, state, COLORS.get(state, COLORS["unknown"]))


def uptime_badge(probe: str, window: str, ratio: float | None) -> str:
    if ratio is None:
        return badge(f"uptime {window}", "no data", COLORS["unknown"])
    color = "#2ea44f" if ratio >= 0.99 else "#dbab09" if ratio >= 0.95 else "#cf222e"
    text = f"{ratio * 100:.2f}%" if ratio < 1 else "100%"
    return badge(f"uptime {window}", text, color)
