"""Reading the results files the report is built from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_versioned_json"]


def read_versioned_json(path: Path, version: int, rerun: str, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``path``, of format ``version``; ``error`` (one line, naming the file) otherwise.
    ``rerun`` says what makes the file again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}): {rerun}") from e
    if not isinstance(data, dict):
        raise error(f"{path} does not hold a JSON object")
    found = data.get("version")
    if found != version:
        raise error(f"{path} has version {found!r}; this report reads version {version}")
    return data
