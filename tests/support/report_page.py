"""Reading the comparison page back in tests: the embedded plotly.js and each chart's figure JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from plotly.offline import get_plotlyjs

__all__ = ["PLOTLYJS_TAG", "figures", "without_plotlyjs"]

PLOTLYJS_TAG = f"<script>{get_plotlyjs()}</script>"
_SEPARATOR = re.compile(r"\s*,?\s*")


def without_plotlyjs(html: str) -> str:
    """The page with its one inlined plotly.js removed (what the report wrote itself)."""
    assert html.count(PLOTLYJS_TAG) == 1
    return html.replace(PLOTLYJS_TAG, "")


def figures(html: str) -> dict[str, dict[str, Any]]:
    """Each chart's ``{"data", "layout", "config"}`` by its div id, in page order, from its ``Plotly.newPlot``."""
    page = html.replace(PLOTLYJS_TAG, "")
    decoder = json.JSONDecoder()
    found: dict[str, dict[str, Any]] = {}
    for call in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        pos, parts = call.end(), []
        for _ in range(3):  # data, layout, config
            value, pos = decoder.raw_decode(page, pos)
            parts.append(value)
            separator = _SEPARATOR.match(page, pos)
            assert separator is not None  # it matches the empty string
            pos = separator.end()
        assert call.group(1) not in found, f"two charts with id {call.group(1)}"
        found[call.group(1)] = dict(zip(("data", "layout", "config"), parts, strict=True))
    return found
