"""Griffe extension: the reStructuredText bits of clip_core's docstrings, read as Markdown.

clip_core writes its math as ``.. math::`` blocks and cross-references as ``:class:`~x.Y```
roles (Sphinx style). mkdocstrings renders docstrings as Markdown, so this rewrites the two
before rendering: a math block becomes an arithmatex ``$$`` block, a role becomes inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _math_blocks(text: str) -> str:
    """Replace each ``.. math::`` directive and its indented body by a ``$$`` block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        body, i = [], i + 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        out += [indent + "$$", *(indent + b for b in body if b), indent + "$$", ""]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """A docstring's ``.. math::`` blocks and Sphinx roles, rewritten as Markdown."""
    return _ROLE.sub(_role, _math_blocks(text))


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring griffe loads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
