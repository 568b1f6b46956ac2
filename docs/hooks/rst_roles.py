"""MkDocs hook: render the reStructuredText bits of docstrings in the API reference.

The code's docstrings use Sphinx roles (``:class:`~flask_geneva.Geneva```) and ``::``
before literal blocks. mkdocstrings renders docstrings as Markdown, where these show up
literally; this hook turns a role into plain code (``Geneva``, the last part when the
target starts with ``~``) and ``::`` into ``:``.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj):<code>(~?)([\w.]+)</code>")
_LITERAL_MARKER = re.compile(r"::(</p>)")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    html = _ROLE.sub(_role, html)
    return _LITERAL_MARKER.sub(r":\1", html)
