"""The product's users, plus a check that the server received exactly the tensor that
``preprocess_image`` produced: the reference ``checksum`` model answers with the sha256 of the input
it received, and every response is compared with the sha256 of the local tensor.

Writes ``{"match": n, "mismatch": m, "unchecked": k}`` to $CHECKSUM_REPORT at exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from locust import events

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))

from locust_inference import decode_triton_response, preprocess_image  # noqa: E402

from locustfile import HighUser, LowUser  # noqa: E402
from servers.models import checksum_words  # noqa: E402

__all__ = ["HighUser", "LowUser"]

EXPECTED = checksum_words(preprocess_image(REPO_ROOT / "data" / "img1.jpg"))
counts = {"match": 0, "mismatch": 0, "unchecked": 0}


def _words(outcome: Any) -> list[int]:
    headers = dict(outcome.headers or [])
    length = headers.get("inference-header-content-length")
    if length is not None or b'"outputs"' in outcome.body[:200]:
        outputs = decode_triton_response(outcome.body, int(length) if length is not None else None)
        row = next(iter(outputs.values()))[0]
    else:
        row = json.loads(outcome.body)["output"][0]
    return [int(v) for v in list(row)[:16]]


@events.request.add_listener
def _check(response: Any, exception: Exception | None, **_kwargs: Any) -> None:
    if exception is not None or response is None or response.body is None:
        counts["unchecked"] += 1
        return
    counts["match" if _words(response) == EXPECTED else "mismatch"] += 1


@events.quitting.add_listener
def _report(**_kwargs: Any) -> None:
    Path(os.environ["CHECKSUM_REPORT"]).write_text(json.dumps(counts))
