"""Plan reports: the facts a plan holds (:mod:`.facts`, the one reader of the plan), drawn as
figures (:mod:`.figures`) and presented as a text report (:mod:`.text`) or a self-contained
HTML page (:mod:`.html`).

Reads: a :class:`~picompile.plan.Plan` (and optionally a run profile).
Writes: text, an HTML string, or an HTML file. ``render_html`` and ``write_html`` load
matplotlib on first use, so the text report alone does not.
"""

from __future__ import annotations

from typing import Any

from picompile.report.text import render_text

__all__ = ["render_html", "render_text", "write_html"]


def __getattr__(name: str) -> Any:
    if name in ("render_html", "write_html"):
        from picompile.report import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
