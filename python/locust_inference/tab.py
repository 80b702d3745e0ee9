"""The web UI's "Inference" tab as data: its columns, and ``latency.json``'s numbers as its rows.

Apart from :mod:`locust_inference.webui`, which wires it into Locust, so that reading it imports no Locust
(importing Locust patches the process for gevent).
"""

from __future__ import annotations

from typing import Any

from locust_inference.results_schema import SUMMARY_KEYS, LatencyDocument

__all__ = ["COLUMNS", "ROUTE", "TAB_KEY", "Row", "rows"]

TAB_KEY = "inference"
ROUTE = "/locust-inference/latency.json"  # the whole document, under Locust's --web-base-path
# a percentile's key in the table (the page turns a key's "_x" into "X" and needs no dots)
_PERCENTILE_COLUMNS = {key: key.replace(".", "") for key in SUMMARY_KEYS}
COLUMNS: list[dict[str, str]] = [
    {"key": "section", "title": "Section"},
    {"key": "name", "title": "Request name"},
    {"key": "measure", "title": "Measure"},
    {"key": "value", "title": "Value"},
    *({"key": column, "title": key} for key, column in _PERCENTILE_COLUMNS.items()),
]
ROUND = 3  # decimals: a µs in ms
Row = dict[str, str | int | float]  # column key -> a number, or n/a


def rows(summary: LatencyDocument | dict[str, Any]) -> list[Row]:
    """The document's numbers as the tab's rows: a histogram summary (a dict of SUMMARY_KEYS) is one row of
    percentiles; every other number, or None, one row with its value. Request entries are named by their
    request name; lists are skipped (a distribution), except a list of records, of which the last (the
    latest window of a time series) is shown."""
    out: list[Row] = []
    for key, value in summary.items():
        if key == "version" or isinstance(value, str):
            continue
        if key == "requests" and isinstance(value, dict):
            for name, entry in value.items():
                if isinstance(entry, dict):
                    for field, part in entry.items():
                        nested = isinstance(part, dict) and not _is_percentiles(part)
                        _walk(out, field if nested else "requests", str(name), [] if nested else [field], part)
        elif isinstance(value, dict) and not _is_percentiles(value):
            _walk(out, key, "", [], value)
        else:
            _walk(out, "run", "", [key], value)
    return out


def _is_percentiles(value: dict[str, Any]) -> bool:
    return bool(value) and all(k in _PERCENTILE_COLUMNS and _is_number(v) for k, v in value.items())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: int | float) -> int | float:
    return value if isinstance(value, int) else round(value, ROUND)


def _walk(out: list[Row], section: str, name: str, path: list[str], value: Any) -> None:
    measure = ".".join(path) or section
    if value is None or _is_number(value):
        out.append(
            {"section": section, "name": name, "measure": measure, "value": "n/a" if value is None else _shown(value)}
        )
    elif isinstance(value, dict):
        if _is_percentiles(value):
            row: Row = {"section": section, "name": name, "measure": measure}
            row.update({_PERCENTILE_COLUMNS[k]: _shown(v) for k, v in value.items()})
            out.append(row)
        else:
            for key, part in value.items():
                _walk(out, section, name, [*path, str(key)], part)
    elif isinstance(value, list) and value and isinstance(value[-1], dict):
        _walk(out, section, name, [*path, "latest"], value[-1])
