"""The product's users, and each reported request's body index, output token count and its source (from
``events.request``'s response, the Outcome), written as JSON to $TOKEN_REPORT at exit:
``[[input_index, output_tokens, token_source, success], ...]``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from locust import events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

import locustfile  # noqa: E402

__all__ = ["HighUser", "LowUser"]

HighUser, LowUser = locustfile.HighUser, locustfile.LowUser
reported: list[tuple[int, int | None, str | None, bool]] = []


@events.request.add_listener
def _record(response: Any, exception: Exception | None, **_kw: Any) -> None:
    reported.append((response.input_index, response.output_tokens, response.token_source, exception is None))


@events.quitting.add_listener
def _write(**_kw: Any) -> None:
    Path(os.environ["TOKEN_REPORT"]).write_text(json.dumps(reported))
