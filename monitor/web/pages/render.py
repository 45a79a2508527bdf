"""The status page (`/`, `check --format html`) and the probe page (`/probe/<name>`).

Plain string building with `html.escape` on every value that is not ours: probe and
target names, error texts and server answers may hold markup, and a hostile answer
must not inject any. No JavaScript and no external resource (the cluster may have no
internet): the style is inline and the page refreshes itself with a meta tag.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import quote

from monitor.results import ProbeResult
from monitor.web.pages.model import AlertRow, Page, ProbeRow, WindowRow
from monitor.web.pages.sparkline import sparkline

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#1f2328;background:#fff}
h1{font-size:20px;margin:0 0 .2em}h2{font-size:16px;margin:1.4em 0 .4em}
.meta{color:#59636e;margin-bottom:1em}.meta span{margin-right:1.2em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #d1d9e0;
vertical-align:top}td.t{white-space:nowrap}th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.st{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.passing{background:#1a7f37}.failing{background:#cf222e}.maintenance{background:#8250df}.unknown{background:#818b98}
.err{font-family:ui-monospace,monospace;font-size:12px;min-width:16em;max-width:36em;overflow-wrap:anywhere}
.critical{color:#cf222e;font-weight:600}.warning{color:#9a6700;font-weight:600}.none{color:#59636e}
a{color:#0969da;text-decoration:none}
"""


def h(value: object) -> str:
    """Escape for text and attribute values (quotes included)."""
    return escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _head(page: Page, title: str) -> list[str]:
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">']
    if page.refresh_seconds:
        out.append(f'<meta http-equiv="refresh" content="{int(page.refresh_seconds)}">')
    out.append('<meta name="viewport" content="width=device-width,initial-scale=1">')
    out.append(f"<title>{h(title)}</title><style>{STYLE}</style></head><body>")
    out.append(f"<h1>{h(title)}</h1>")
    meta = [
        f"version {h(page.version)}",
        f"location {h(page.location or '(not set)')}",
        f"replica {h(page.replica or '-')}",
    ]
    if page.shard:
        meta.append(f"shard {h(page.shard)}")
    if page.reloaded_at is not None:
        meta.append(f"config loaded {h(when(page.reloaded_at))}")
    meta.append(f"rendered {h(when(page.generated_at))}")
    out.append('<div class="meta">' + "".join(f"<span>{m}</span>" for m in meta) + "</div>")
    return out


def _state(state: str) -> str:
    return f'<span class="st {state}">{state}</span>'


def _probe_row(row: ProbeRow, link: bool) -> str:
    last = row.last
    failed = last.failed_step if last is not None else None
    diagnosis = last.diagnosis if last is not None else None
    name = f'<a href="probe/{quote(row.name, safe="")}">{h(row.name)}</a>' if link else h(row.name)
    state = _state(row.state)
    if row.maintenance is not None:
        underneath = "no run yet" if last is None else ("last run passed" if last.ok else "last run failed")
        state += f'<div class="none">window {h(row.maintenance)}<br>{underneath}</div>'
    cells = [  # the last-run cell is index 4: styled not to wrap
        name,
        h(row.target),
        h(row.location or "-"),
        state,
        h(when(last.started_at) if last is not None else "-"),
        h(failed.reason.value if failed is not None and failed.reason else "-"),
        h(failed.name if failed is not None else "-"),
        f'<span class="err">{h(failed.error) if failed is not None and failed.error else "-"}</span>',
        h(f"{diagnosis.component}: {diagnosis.summary}" if diagnosis is not None else "-"),
        sparkline(row.runs),
    ]
    nums = [pct(row.success_ratio) + f" <small>({len(row.runs)})</small>", pct(row.uptime_24h)]
    return (
        f'<tr data-probe="{h(row.name)}" data-state="{row.state}">'
        + "".join(f'<td class="t">{c}</td>' if i == 4 else f"<td>{c}</td>" for i, c in enumerate(cells))
        + "".join(f'<td class="num">{n}</td>' for n in nums)
        + "</tr>"
    )


PROBE_HEADER = (
    "<tr><th>probe</th><th>target</th><th>location</th><th>last result</th><th>last run</th><th>reason</th>"
    "<th>failed step</th><th>error</th><th>diagnosis</th><th>recent runs</th><th>success (kept)</th>"
    "<th>uptime 24h</th></tr>"
)


def _alerts(alerts: list[AlertRow]) -> list[str]:
    if not alerts:
        return ['<p class="none" id="no-alerts">No alert firing.</p>']
    out = [
        '<table id="alerts"><tr><th>alert</th><th>severity</th><th>target</th><th>probe</th><th>since</th>'
        "<th>receivers</th><th>quorum</th><th>summary</th></tr>"
    ]
    for a in alerts:
        out.append(
            f'<tr data-alert="{h(a.name)}"><td>{h(a.name)}</td><td class="{h(a.severity)}">{h(a.severity)}</td>'
            f"<td>{h(a.target)}</td><td>{h(a.probe)}</td><td>{h(when(a.since))}</td>"
            f"<td>{h(', '.join(a.receivers) or '-')}</td><td>{h(a.quorum)}</td><td>{h(a.summary)}</td></tr>"
        )
    out.append("</table>")
    return out


def _windows(windows: list[WindowRow]) -> list[str]:
    if not windows:
        return ['<p class="none">No maintenance window configured or created.</p>']
    out = [
        '<table id="maintenance"><tr><th>window</th><th>origin</th><th>covers</th><th>when</th><th>now</th>'
        "<th>id</th></tr>"
    ]
    for w in windows:
        out.append(
            f"<tr><td>{h(w.name)}</td><td>{h(w.origin)}</td><td>{h(w.covers)}</td><td>{h(w.when)}</td>"
            f"<td>{_state('maintenance') if w.active else '-'}</td><td><code>{h(w.id)}</code></td></tr>"
        )
    out.append("</table>")
    return out


class RowCache:
    """Rendered probe rows, reused until the probe runs again (or its window, location or
    the hour changes): a page of 1,000 probes re-renders only the rows that moved since
    the last request. Thread-safe enough: a race renders a row twice, never wrongly."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[tuple[object, ...], str]] = {}

    def row(self, row: ProbeRow, link: bool, hour: int) -> str:
        last = row.last
        key = (row.total_runs, last.started_at if last else None, row.maintenance, row.location, link, hour)
        hit = self._rows.get(row.name)
        if hit is not None and hit[0] == key:
            return hit[1]
        html = _probe_row(row, link)
        self._rows[row.name] = (key, html)
        return html

    def prune(self, names: set[str]) -> None:
        if len(self._rows) > 2 * len(names) + 16:
            self._rows = {k: v for k, v in list(self._rows.items()) if k in names}


def status_page(page: Page, link_probes: bool = True, cache: RowCache | None = None) -> str:
    counts = {s: 0 for s in ("passing", "failing", "maintenance", "unknown")}
    for row in page.probes:
        counts[row.state] += 1
    out = _head(page, page.title)
    out.append(
        '<p id="summary">'
        + " ".join(f"{_state(s)} {n}" for s, n in counts.items() if n or s in ("passing", "failing"))
        + f" &nbsp; {len(page.alerts)} alert(s) firing</p>"
    )
    out.append("<h2>Firing alerts</h2>")
    out += _alerts(page.alerts)
    if page.target_diagnosis:
        out.append(
            '<h2>Target diagnosis</h2><table id="target-diagnosis"><tr><th>target</th><th>blamed</th><th>why</th></tr>'
        )
        for target, (component, summary) in sorted(page.target_diagnosis.items()):
            out.append(f"<tr><td>{h(target)}</td><td>{h(component)}</td><td>{h(summary)}</td></tr>")
        out.append("</table>")
    out.append('<h2>Probes</h2><table id="probes">' + PROBE_HEADER)
    if cache is None:
        out += [_probe_row(row, link_probes) for row in page.probes]
    else:
        hour = int(page.generated_at // 3600)
        out += [cache.row(row, link_probes, hour) for row in page.probes]
        cache.prune({row.name for row in page.probes})
    out.append("</table>")
    out.append("<h2>Maintenance windows</h2>")
    out += _windows(page.windows)
    out.append("</body></html>")
    return "".join(out)


def _steps(result: ProbeResult) -> list[str]:
    out = [
        '<table id="steps"><tr><th>step</th><th>result</th><th>duration</th><th>connect</th><th>tls</th>'
        "<th>first byte</th><th>body</th><th>request</th><th>status</th><th>error</th></tr>"
    ]
    for s in result.steps:
        state = "unknown" if s.skipped else ("passing" if s.ok else "failing")
        word = "skipped" if s.skipped else ("ok" if s.ok else (s.reason.value if s.reason else "failed"))
        phases = [f"{v * 1000:.1f} ms" for v in s.phases.values()] if s.phases else ["-"] * 4
        out.append(
            f'<tr><td>{h(s.name)}</td><td><span class="st {state}">{h(word)}</span></td>'
            f'<td class="num">{s.duration_seconds * 1000:.1f} ms</td>'
            + "".join(f'<td class="num">{p}</td>' for p in phases)
            + f"<td>{h(s.method or '')} {h(s.path or '')}</td><td>{h(s.status_code or '-')}</td>"
            f'<td class="err">{h(s.error or "-")}</td></tr>'
        )
    out.append("</table>")
    return out


def probe_page(page: Page, row: ProbeRow) -> str:
    out = _head(page, f"{page.title}: probe {row.name}")
    out.append('<p><a href="../">all probes</a></p><table id="probes">' + PROBE_HEADER)
    out.append(_probe_row(row, link=False) + "</table>")
    out.append("<h2>Latest run</h2>")
    out += _steps(row.last) if row.last is not None else ['<p class="none">No run yet.</p>']
    out.append("<h2>Alerts it drives</h2>")
    out += _alerts([a for a in page.alerts if a.probe == row.name])
    out.append("<h2>Recent failures</h2>")
    failures = [f for f in page.failures if f.probe == row.name][:20]
    if not failures:
        out.append('<p class="none">None kept.</p>')
    else:
        out.append(
            '<table id="failures"><tr><th>when</th><th>step</th><th>reason</th><th>error</th><th>diagnosis</th></tr>'
        )
        for f in failures:
            step = f.failed_step
            d = f.diagnosis
            out.append(
                f"<tr><td>{h(when(f.started_at))}</td><td>{h(step.name if step else '-')}</td>"
                f"<td>{h(step.reason.value if step and step.reason else '-')}</td>"
                f'<td class="err">{h(step.error if step and step.error else "-")}</td>'
                f"<td>{h(f'{d.component}: {d.summary}' if d else '-')}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "".join(out)
