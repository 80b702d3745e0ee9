"""HighUser's back-to-back sending: the I/O thread sends each next request the moment an answer arrives
(a follow-up), against real Triton; the order of the bodies, what crosses between the threads, and a
graceful stop that leaves nothing sent unreported."""

from __future__ import annotations

import json
from pathlib import Path

from locust_inference import RequestSlot
from locust_inference._native import thread_crossings
from locust_inference.backends import prepare
from support.own_model import first_words, image_set, settings, stretched, words
from support.runs import REPO_ROOT, clean_env, run_locust, triton_successes


def test_follow_ups_walk_the_set_in_order_and_each_saves_a_hand_off(triton, tmp_path: Path) -> None:
    files = image_set(tmp_path / "set")
    endpoint = prepare(settings(triton.url, "echo_uint8_nhwc", image=str(tmp_path / "set"))).endpoint
    slot = RequestSlot()
    to_io = thread_crossings()[0]
    got, followed = [], []
    for _ in range(8):
        slot.submit(endpoint, follow=True)  # adopts the follow-up when one left, else starts a request
        outcome = slot.wait(timeout=60)
        assert outcome is not None and outcome.ok, outcome
        # Whether the next request left as this answer arrived: it does unless this request was itself
        # a follow-up answered before the submit above adopted it (then it was not armed in time).
        followed.append(slot.ahead)
        got.append((outcome.input_index, first_words(outcome)))
    assert followed[0], "the first request was armed before it could be answered"
    slot.unfollow()
    slot.cancel()
    assert not slot.ahead and not slot.in_flight
    # the first request and each one that followed no follow-up crossed to the I/O thread
    assert thread_crossings()[0] == to_io + 1 + followed[:-1].count(False)
    expected = [words(stretched(f, 224, 224)) for f in files]
    assert got == [(i, expected[i]) for i in [0, 1, 2, 0, 1, 2, 0, 1]]


def test_without_follow_every_request_is_a_hand_off(triton, tmp_path: Path) -> None:
    image_set(tmp_path / "set")
    endpoint = prepare(settings(triton.url, "echo_uint8_nhwc", image=str(tmp_path / "set"))).endpoint
    slot = RequestSlot()
    to_io = thread_crossings()[0]
    for _ in range(3):
        slot.submit(endpoint)
        assert slot.wait(timeout=60) is not None
        assert not slot.ahead and not slot.in_flight
    assert thread_crossings()[0] == to_io + 3


def test_a_follow_up_is_adopted_only_by_its_own_endpoint(triton, tmp_path: Path) -> None:
    # Two endpoints of one body each, told apart by their image: the follow-up the slot sent to the
    # first is not what a submit to the second takes.
    files = image_set(tmp_path / "set")
    first, second = (prepare(settings(triton.url, "echo_uint8_nhwc", image=str(f))).endpoint for f in files[:2])
    expected = [words(stretched(f, 224, 224)) for f in files[:2]]
    slot = RequestSlot()
    slot.submit(first, follow=True)
    outcome = slot.wait(timeout=60)
    assert outcome is not None and outcome.ok, outcome
    assert first_words(outcome) == expected[0]
    assert slot.ahead, "the follow-up was armed before the answer came"
    to_io = thread_crossings()[0]
    slot.submit(second)
    outcome = slot.wait(timeout=60)
    assert outcome is not None and outcome.ok, outcome
    assert first_words(outcome) == expected[1], "the first endpoint's follow-up was taken"
    assert thread_crossings()[0] == to_io + 1  # a request of its own, handed to the I/O thread
    slot.cancel()


def _stop_probe(triton, http, tmp_path: Path, hold: bool, wait: float = 0) -> tuple[int, int, list[dict], int]:
    """A graceful stop of 4 back-to-back users on echo_counted: (requests the server answered, requests
    Locust counted, each user's reports)."""
    probe = tmp_path / "probe.jsonl"
    before = triton_successes(http, triton.url, "echo_counted")
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "--stop-timeout",
        "30",
        "ProbedHighUser",
        env=clean_env(
            SERVER="triton",
            MODEL_NAME="echo_counted",
            PROBE_OUT=str(probe),
            PROBE_HOLD=str(int(hold)),
            PROBE_WAIT=str(wait),
        ),
        locustfile=REPO_ROOT / "tests" / "support" / "locustfiles" / "stop_probe.py",
        run_time="2s",
        users=4,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stats("triton/echo_counted")["Failure Count"] == "0"
    answered = triton_successes(http, triton.url, "echo_counted") - before
    results = json.loads((tmp_path / "latency.json").read_text())
    counted = results["locust"]["requests"]  # Locust's exact count
    abandoned = results["requests"]["triton/echo_counted"]["abandoned"]
    return answered, counted, [json.loads(line) for line in probe.read_text().splitlines()], abandoned


def test_a_graceful_stop_leaves_no_request_unreported(triton, http, tmp_path: Path) -> None:
    # each user's follow-up, out when the stop came, is waited for and reported, not abandoned
    answered, counted, users, abandoned = _stop_probe(triton, http, tmp_path, hold=False)
    assert abandoned == 0
    assert answered == counted == sum(u["reported"] for u in users) > 0
    assert len(users) == 4


def test_a_follow_up_out_before_a_graceful_stop_is_reported(triton, http, tmp_path: Path) -> None:
    # each user holds in the task that reported its first answer until the stop: its follow-up left
    # before the stop, and is reported as the user stops; nothing else is sent
    answered, counted, users, abandoned = _stop_probe(triton, http, tmp_path, hold=True)
    assert abandoned == 0
    assert (answered, counted, [u["reported"] for u in users]) == (8, 8, [2, 2, 2, 2])


def test_a_positive_wait_keeps_back_to_back_off(triton, http, tmp_path: Path) -> None:
    # a HighUser with a 50 ms wait: no request leaves before its user asks for it (no follow-up is out
    # at any report). Users stopped while they wait are killed there, but Locust decides so in a greenlet
    # of its own and the kill lands a moment later: a user whose wait ended meanwhile has sent its next
    # request, and is killed with it out. Triton counted those (1 to 3 in about half the runs), and they
    # are the abandoned ones.
    answered, counted, users, abandoned = _stop_probe(triton, http, tmp_path, hold=False, wait=0.05)
    assert counted <= answered <= counted + abandoned, (counted, answered, abandoned)
    assert counted == sum(u["reported"] for u in users) > 0
    for user in users:
        assert user["ahead"] == [False] * user["reported"], user


def test_users_killed_with_requests_out_count_them_as_abandoned(triton, http, tmp_path: Path) -> None:
    # No --stop-timeout: the run's end kills the users. Each back-to-back user always has a request out (and
    # may have an answer it has not taken yet): never reported, and Triton may have run them.
    users = 4
    before = triton_successes(http, triton.url, "echo_counted")
    run = run_locust(
        tmp_path,
        "--host",
        triton.url,
        "HighUser",
        env=clean_env(SERVER="triton", MODEL_NAME="echo_counted"),
        run_time="2s",
        users=users,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answered = triton_successes(http, triton.url, "echo_counted") - before
    entry = json.loads((tmp_path / "latency.json").read_text())["requests"]["triton/echo_counted"]
    counted, abandoned = entry["count"], entry["abandoned"]
    assert users <= abandoned <= 2 * users, entry  # one out per user, and perhaps its answer not yet taken
    assert counted <= answered <= counted + abandoned, (counted, answered, abandoned)
    assert "Abandoned (sent, never reported" in run.stdout
