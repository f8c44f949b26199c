"""The regulator's view: one self-contained HTML page from the audit logs (charts inline, nothing fetched).

:func:`render_report` takes logs already read and checked (each with the
outcome of its chain check) and returns the page: queries per lender over
time, purposes, refused queries by reason, consent expiries, per-platform
contributions, registry updates, releases, and the chain check of each log.
Every chart is inline SVG whose bars carry ``data-label`` and ``data-value``,
so the numbers can be read back from the page. The logs hold no identifier
and no score, and neither does the page. Design: docs/registry.md#the-regulators-report.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckedLog", "render_report", "report_figures"]


@dataclass(frozen=True)
class CheckedLog:
    """A log for the report: its name, entries and the outcome of its chain check."""

    name: str
    entries: list[dict[str, Any]] = field(repr=False)
    ok: bool
    detail: str


def report_figures(logs: Sequence[CheckedLog]) -> dict[str, dict[str, int]]:
    """The numbers the report shows, by chart: {chart: {label: value}}."""
    entries = [e for log in logs for e in log.entries]
    queries = [e for e in entries if e.get("event") == "query"]
    answered = [e for e in queries if e.get("outcome") == "answered"]
    refused = [e for e in queries if e.get("outcome") == "refused"]
    per_lender_day: Counter[str] = Counter(f"{e.get('lender')} {str(e.get('time', ''))[:10]}" for e in queries)
    contributions: Counter[str] = Counter()
    for e in answered:
        for platform, n in (e.get("contributions") or {}).items():
            contributions[platform] += int(n)
    expiries: Counter[str] = Counter()
    for e in queries:
        for day in e.get("expiries") or []:
            expiries[str(day)[:7]] += 1
    updates: Counter[str] = Counter()
    for e in entries:
        if e.get("event") == "registry-update":
            for what in ("new", "updated", "removed"):
                updates[f"{e.get('platform')} {what}"] += int(e.get(what, 0))
    return {
        "queries-per-lender": dict(sorted(Counter(str(e.get("lender")) for e in queries).items())),
        "queries-per-lender-day": dict(sorted(per_lender_day.items())),
        "purposes": dict(sorted(Counter(str(e.get("purpose")) for e in queries).items())),
        "refusals": dict(sorted(Counter(str(e.get("reason")) for e in refused).items())),
        "consent-expiries": dict(sorted(expiries.items())),
        "contributions": dict(sorted(contributions.items())),
        "registry-updates": dict(sorted(updates.items())),
        "releases": dict(sorted(Counter(str(e.get("event")) for e in entries
                                        if e.get("event") in ("release", "answer")).items())),
    }


def _bars(chart: str, title: str, values: Mapping[str, int]) -> str:
    """A horizontal bar chart as inline SVG, each bar labelled and carrying its value."""
    if not values:
        return f'<section><h2>{html.escape(title)}</h2><p class="empty" data-chart="{chart}">none</p></section>'
    top = max(values.values()) or 1
    row, width, label_w = 22, 360, 260
    parts = [f'<svg class="chart" data-chart="{chart}" width="{label_w + width + 60}" '
             f'height="{row * len(values) + 10}" role="img" aria-label="{html.escape(title)}">']
    for i, (label, value) in enumerate(values.items()):
        y = 5 + i * row
        w = max(1, round(width * value / top))
        esc = html.escape(label)
        short = esc if len(label) <= 40 else html.escape(label[:39]) + "…"
        parts.append(f'<text x="0" y="{y + 15}" font-size="12"><title>{esc}</title>{short}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{row - 6}" fill="#4a78b5" '
                     f'data-label="{esc}" data-value="{value}"></rect>')
        parts.append(f'<text x="{label_w + w + 4}" y="{y + 15}" font-size="12">{value}</text>')
    parts.append("</svg>")
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], name: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return (f'<section><h2>{html.escape(title)}</h2><table data-table="{name}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></section>")


def render_report(logs: Sequence[CheckedLog], *, generated: str) -> str:
    """The regulator's page for ``logs`` (already read and checked), as one self-contained HTML string."""
    figures = report_figures(logs)
    entries = [e for log in logs for e in log.entries]
    checks = _table("Chain check", ["log", "entries", "result"],
                    [[log.name, len(log.entries), "OK" if log.ok else f"FAILED: {log.detail}"] for log in logs],
                    "checks")
    releases = _table(
        "Releases and answers decrypted", ["time", "event", "bureau", "lender", "entities", "score columns", "noise"],
        [[e.get("time"), e.get("event"), e.get("bureau"), e.get("lender", ""), e.get("entities"),
          ", ".join(e.get("score_columns") or []), (e.get("noise") or {}).get("mechanism", "none")]
         for e in entries if e.get("event") in ("release", "answer")],
        "releases",
    )
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for key, n in figures["queries-per-lender-day"].items():
        lender, day = key.rsplit(" ", 1)
        per_day[lender][day] = n
    over_time = "".join(_bars(f"queries-over-time-{i}", f"Queries by {lender}, per day", days)
                        for i, (lender, days) in enumerate(sorted(per_day.items())))
    sections = [
        checks,
        _bars("queries-per-lender", "Queries per lender", figures["queries-per-lender"]),
        over_time,
        _bars("purposes", "Purposes", figures["purposes"]),
        _bars("refusals", "Refused queries by reason", figures["refusals"]),
        _bars("consent-expiries", "Consent expiries, per month", figures["consent-expiries"]),
        _bars("contributions", "Records each platform contributed to answers", figures["contributions"]),
        _bars("registry-updates", "Registry updates (entities)", figures["registry-updates"]),
        releases,
    ]
    ok = all(log.ok for log in logs)
    style = ("body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.bad{color:#b00}.good{color:#070}")
    status = ('<p class="good" data-status="ok">every log\'s chain and signatures verify</p>' if ok
              else '<p class="bad" data-status="failed">a log does not verify: see the chain check</p>')
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pprl audit report</title>"
        f"<style>{style}</style></head><body><h1>pprl audit report</h1>"
        f"<p>Generated {html.escape(generated)} from {len(logs)} log(s), {len(entries)} entries.</p>{status}"
        + "".join(sections)
        + "</body></html>\n"
    )
