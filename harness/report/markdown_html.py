"""The small Markdown subset ``report.md``'s sections are written in, as HTML, so that
``report.html`` shows the same section without a second renderer per table.

Handled: ``#`` headings (shifted to ``<h2>``..), paragraphs, pipe tables (the first row a
header, the ``|---|`` line skipped), and inline ``**strong**``, ``*emphasis*`` and
```code```. Image lines (``![..](..)``) are dropped: the page embeds every plot in its own
Plots section. Everything is escaped before the inline rules apply, so no input becomes
markup it did not ask for.
"""
from __future__ import annotations

import html
import re
from collections.abc import Sequence

__all__ = ["inline_html", "markdown_html"]

_CODE = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")


def inline_html(text: str) -> str:
    """Escaped ``text`` with ``**..**``, ``*..*`` and ```..``` as ``strong`` / ``em`` /
    ``code``."""
    out = html.escape(text, quote=True)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _STRONG.sub(r"<strong>\1</strong>", out)
    return _EM.sub(r"<em>\1</em>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(rows: Sequence[str]) -> str:
    head, *body = [r for r in rows if not re.fullmatch(r"\|?\s*(:?-+:?\s*\|\s*)*:?-+:?\s*\|?", r.strip())]
    th = "".join(f"<th>{inline_html(c)}</th>" for c in _cells(head))
    trs = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in _cells(r)) + "</tr>"
                  for r in body)
    return (f'<div class="table-wrap"><table><thead><tr>{th}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>")


def markdown_html(lines: Sequence[str], heading_offset: int = 0) -> str:
    """HTML for Markdown ``lines`` (one element per line, as the report writers build them;
    an element may hold several lines). ``heading_offset`` shifts heading levels."""
    flat = [part for line in lines for part in str(line).split("\n")]
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if not block:
            return
        if block[0].lstrip().startswith("|"):
            out.append(_table(block))
        else:
            out.append(f'<p class="note">{inline_html(" ".join(block))}</p>')
        block.clear()

    for line in flat:
        text = line.rstrip()
        heading = re.match(r"(#{1,6})\s+(.*)", text)
        if not text.strip() or heading or text.lstrip().startswith("!["):
            flush()
            if heading:
                level = min(6, len(heading.group(1)) + heading_offset)
                out.append(f"<h{level}>{inline_html(heading.group(2))}</h{level}>")
            continue
        if block and block[0].lstrip().startswith("|") != text.lstrip().startswith("|"):
            flush()
        block.append(text)
    flush()
    return "\n".join(out)
