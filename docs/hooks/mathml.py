"""MkDocs hook: render arithmatex's math as MathML at build time (no JavaScript, no CDN).

pymdownx.arithmatex (generic mode) leaves ``\\(...\\)`` in ``<span class="arithmatex">`` and
``\\[...\\]`` in ``<div class="arithmatex">``; this converts each with latex2mathml, which
browsers display natively. A multi-line block (``\\\\`` breaks, ``&`` alignment) becomes one
display line per row, since latex2mathml does not lay out ``aligned``.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
_ENV = re.compile(r"\\(?:begin|end)\{(?:aligned|align\*?|split)\}")


_TEXT = re.compile(r"\\text\{([^}]*)\}")


def _latex(source: str) -> str:
    """The TeX source of one formula; ``\\_`` inside ``\\text{}`` is a plain underscore there."""
    tex = html.unescape(source).strip()
    return _TEXT.sub(lambda m: r"\text{" + m[1].replace(r"\_", "_") + "}", tex)


def _block(match: re.Match[str]) -> str:
    rows = [r.replace("&", " ").strip() for r in _ENV.sub("", _latex(match[1])).split(r"\\")]
    maths = "".join(convert(r, display="block") for r in rows if r)
    return f'<div class="arithmatex">{maths}</div>'


def _inline(match: re.Match[str]) -> str:
    return f'<span class="arithmatex">{convert(_latex(match[1]))}</span>'


def on_page_content(html_text: str, **kwargs: object) -> str:
    return _INLINE.sub(_inline, _BLOCK.sub(_block, html_text))
