"""``--stagger S``: each user's first request waits a random time from 0 to S after the user starts, drawn
from the user's seed (the same in every run with ``--seed``), and a user stopped meanwhile ends at once
without sending. Against real Triton (``echo_counted``, whose count of requests is compared)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.runs import REPO_ROOT, clean_env, run_locust, triton_successes

PROBE = REPO_ROOT / "tests" / "support" / "locustfiles" / "stagger_probe.py"
MODEL = "echo_counted"
USERS = 6
# gevent starts a sleep's timer from the event loop's clock, read when the loop last turned: the first
# request may leave up to that long before the delay seems to have passed on a fresh reading
LOOP_CLOCK_S = 0.05


def _probe(
    triton: Any,
    http: Any,
    tmp_path: Path,
    *args: str,
    run_time: str,
    timeout: float = 120,
    user: str = "StaggerProbeUser",
) -> tuple[int, int, list[dict[str, Any]]]:
    """Runs USERS users of the probe's class ``user``: (requests Triton answered, our count of requests,
    each user's record)."""
    tmp_path.mkdir(exist_ok=True)
    out = tmp_path / "probe.jsonl"
    before = triton_successes(http, triton.url, MODEL)
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        *args,
        user,
        env=clean_env(SERVER="triton", MODEL_NAME=MODEL, PROBE_OUT=str(out)),
        locustfile=PROBE,
        run_time=run_time,
        users=USERS,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answered = triton_successes(http, triton.url, MODEL) - before
    counted = json.loads((tmp_path / "latency.json").read_text())["requests"][f"triton/{MODEL}"]["count"]
    return answered, counted, [json.loads(line) for line in out.read_text().splitlines()]


def test_first_requests_wait_their_seeded_delays(triton: Any, http: Any, tmp_path: Path) -> None:
    # a graceful stop (--stop-timeout): each user's follow-up out at the end is reported, so Triton's
    # count and Locust's agree
    args = ("--stagger", "2", "--stop-timeout", "30", "--seed")
    runs = [
        _probe(triton, http, tmp_path / f"{n}", *args, str(seed), run_time="4s") for n, seed in enumerate((7, 7, 8))
    ]
    delays = [sorted(u["delay"] for u in users) for _, _, users in runs]
    for answered, counted, users in runs:
        assert answered == counted > 0
        assert len(users) == USERS
        for user in users:
            assert 0 <= user["delay"] <= 2, user
            assert user["waited"] is not None and user["waited"] >= user["delay"] - LOOP_CLOCK_S, user
        assert len(set(u["delay"] for u in users)) == USERS, users  # each user its own
    assert delays[0] == delays[1], "the same seed, the same delays"
    assert delays[0] != delays[2], "another seed, other delays"


@pytest.mark.parametrize("user", ["StaggerProbeUser", "StaggerProbeLowUser"])
def test_a_user_stopped_while_it_waits_ends_at_once_and_sends_nothing(
    triton: Any, http: Any, tmp_path: Path, user: str
) -> None:
    # --stop-timeout 30 would hold a running user until its task ends; a waiting one is ended at once, so
    # the run ends well within the 25 s this gives it. An open-loop user's stream is not started.
    answered, counted, users = _probe(
        triton, http, tmp_path, "--stagger", "600", "--stop-timeout", "30", run_time="2s", timeout=25, user=user
    )
    assert (answered, counted) == (0, 0)
    assert [(u["waited"], u["ended"]) for u in users] == [(None, "GreenletExit")] * USERS
