"""The AIPerf side of the generative benchmark (bench/aiperf.py, bench/llm.py), without a server: its
``profile_export_aiperf.json`` reader on a real export's fields and on hostile files, and the table's
verdicts."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from bench import aiperf, llm

# The fields the bench reads, as AIPerf 0.13.0 wrote them in a run against servers/litserve_llm.py (trimmed)
EXPORT: dict[str, Any] = {
    "schema_version": "1.0",
    "aiperf_version": "0.13.0",
    "request_count": {"unit": "requests", "avg": 28.0},
    "time_to_first_token": {"unit": "ms", "avg": 65.144405, "p50": 64.534424, "p99": 83.00330887, "count": 28},
    "inter_token_latency": {"unit": "ms", "avg": 10.12018706, "p50": 10.0893352, "p99": 11.07195287, "count": 28},
    "output_token_throughput": {"unit": "tokens/sec", "avg": 142.02797619521084},
    "output_sequence_length": {"unit": "tokens", "avg": 16.0, "p50": 16.0},
    "input_sequence_length": {"unit": "tokens", "avg": 130.2142857, "p50": 134.5},
    "telemetry_data": None,
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "profile_export_aiperf.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_real_export_is_read(tmp_path: Path) -> None:
    export = aiperf.parse(write(tmp_path, EXPORT))
    assert export == aiperf.Export(
        ttft_p50_ms=64.534424,
        itl_p50_ms=10.0893352,
        output_token_throughput=142.02797619521084,
        requests=28,
        output_tokens_p50=16.0,
        input_tokens_p50=134.5,
    )
    # the token counts are optional
    trimmed = {k: v for k, v in EXPORT.items() if not k.endswith("_sequence_length")}
    assert aiperf.parse(write(tmp_path, trimmed)).output_tokens_p50 is None


def _with(name: str, value: Any) -> dict[str, Any]:
    return {**EXPORT, name: value}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "is not JSON"),
        ("[" * 100_000, "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ({k: v for k, v in EXPORT.items() if k != "time_to_first_token"}, "has no 'time_to_first_token' object"),
        (_with("inter_token_latency", [1, 2]), "has no 'inter_token_latency' object"),
        (_with("time_to_first_token", {"unit": "ms"}), "time_to_first_token.p50 is not a number >= 0"),
        (_with("time_to_first_token", {"unit": "ms", "p50": "64"}), "time_to_first_token.p50 is not a number"),
        (_with("time_to_first_token", {"unit": "ms", "p50": True}), "time_to_first_token.p50 is not a number"),
        (_with("time_to_first_token", {"unit": "ms", "p50": -1.0}), "time_to_first_token.p50 is not a number"),
        (json.dumps(_with("inter_token_latency", {"unit": "ms", "p50": math.nan})), "inter_token_latency.p50 is not"),
        (json.dumps(_with("inter_token_latency", {"unit": "ms", "p50": math.inf})), "inter_token_latency.p50 is not"),
        (_with("time_to_first_token", {"unit": "s", "p50": 0.06}), "time_to_first_token is in 's', not ms"),
        (_with("output_token_throughput", {"unit": "tokens/sec", "avg": None}), "output_token_throughput.avg is not"),
        (_with("request_count", {"unit": "requests", "avg": 27.5}), "request_count is not a whole number"),
        (_with("output_sequence_length", {"unit": "tokens", "p50": "x"}), "output_sequence_length.p50 is not"),
    ],
)
def test_a_bad_export_is_one_line(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        aiperf.parse(write(tmp_path, data))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_an_export_past_the_limit_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, EXPORT)
    monkeypatch.setattr(aiperf, "MAX_EXPORT_BYTES", path.stat().st_size - 1)
    opened: list[Path] = []
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self))
    with pytest.raises(ValueError, match=r"bytes, more than"):
        aiperf.parse(path)
    assert opened == []


def test_the_verdicts() -> None:
    ours = [llm.Run(ttft_p50_ms=51.0, itl_p50_ms=10.0, tokens_per_s=700.0, cpu_us_per_token=50.0)]
    theirs = [llm.Run(ttft_p50_ms=60.0, itl_p50_ms=10.4, tokens_per_s=690.0, cpu_us_per_token=240.0)]
    table, verdicts = llm.render(ours, theirs)
    # TTFT 51/60 = 0.85: missed; ITL 0.962 and tokens/s 1.014: within 5 %; CPU 50/240 = 0.208 > 1/5: missed
    assert [ok for _, ok in verdicts] == [False, True, True, False], table
    assert "| TTFT p50 (ms) | 51.00 | 60.00 | 0.850 | 0.850 to 0.850 | within 5% | **no** |" in table
    # a failed AIPerf run is left out and said, its measures not judged
    _, verdicts = llm.render(ours, [llm.Run(error="aiperf exited 1")])
    assert [ok for _, ok in verdicts] == [None, None, None, None]


def test_the_cpu_window_is_the_steady_one() -> None:
    sampler = llm.GroupSampler(llm.FinishedRequests(Path("unused")))
    # (seconds, group CPU s, finished requests): start-up CPU before the first request is left out, and the
    # window ends at the last sample where the count rose
    sampler.samples = [(0.0, 5.0, 0), (0.5, 6.0, 0), (1.0, 6.1, 2), (2.0, 6.2, 10), (3.0, 6.4, 20), (4.0, 9.0, 20)]
    per_request, requests = sampler.cpu_per_request() or (0.0, 0)
    assert requests == 10 and math.isclose(per_request, 0.02), (per_request, requests)


def test_the_scripted_sse_stream() -> None:
    """bench/llm_scale.py's nginx script: TOKENS content chunks, 20 ms apart, each flushed, then usage and
    [DONE], every data line valid JSON once nginx turns its \\n escapes into newlines."""
    import re

    from bench import llm_scale

    config = llm_scale.render_config(8080, Path("/tmp/x"), streams=2000)
    assert "worker_connections 4256;" in config
    location = config.split("location = /v1/chat/completions {", 1)[1]
    assert location.count(f"echo_sleep {llm_scale.GAP_S};") == llm_scale.TOKENS - 1
    assert location.count("echo_flush;") == llm_scale.TOKENS
    played = "".join(re.findall(r"echo -n '([^']*)';", location)).replace("\\n", "\n")
    events = [e.removeprefix("data: ") for e in played.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]
    assert contents == [f"tok{i} " for i in range(llm_scale.TOKENS)]
    assert chunks[-1]["usage"]["completion_tokens"] == llm_scale.TOKENS


def test_scale_table_shows_the_servers_bound_beside_ours() -> None:
    """The scale row's table sets ours beside h2load's streams on the same server, for comparison."""
    from bench import llm_scale

    runs = [
        llm_scale.Run(window_tokens_per_s=30_000.0, h2load_tokens_per_s=60_000.0, h2load_stream_s=3.25),
        llm_scale.Run(window_tokens_per_s=45_000.0, h2load_tokens_per_s=50_000.0, h2load_stream_s=4.0),
        llm_scale.Run(window_tokens_per_s=40_000.0, h2load_error="h2load exited 1"),
    ]
    table, verdicts = llm_scale.render(runs, streams=2000)
    assert "| h2load on the same server and streams: achieved / offered | 0.550 | 0.500 to 0.600 |" in table
    assert "| ours (steady window) / h2load (its run) | 0.700 | 0.500 to 0.900 |" in table
    assert "| h2load: mean time for a stream (s; the script's 2) | 3.62 | 3.25 to 4.00 |" in table
    assert "- repeat 3, h2load: h2load exited 1" in table
    assert dict(verdicts)["achieved / emitted tokens >= 0.99"] is None  # nginx's log was not read
    assert "timer_resolution 1ms;" in llm_scale.render_config(8080, Path("/tmp/x"), streams=2000)


def test_nginx_access_log_and_locusts_ends_counted_in_one_window() -> None:
    """The steady window runs from the ramp (stagger and first stream) plus 1 s after nginx's first stream
    began to 1 s before its last line; nginx's complete streams that ended in it (not those cut by the stop:
    fewer bytes, or a 499) and Locust's successful streams that ended in it are counted alike."""
    from bench import llm_scale

    config = llm_scale.render_config(8080, Path("/tmp/x"), streams=2000)
    assert "log_format streams '$msec $request_time $status $bytes_sent';" in config
    assert f"access_log /tmp/x/{llm_scale.ACCESS_LOG} streams" in config.split("location = /v1/chat/completions")[1]
    lines = [
        "1002.000 2.000 200 9000",  # the first stream (began at 1000), ended in the ramp: left out
        "1005.000 2.100 200 9000",  # in the window (1004 to 1008.5)
        "1006.000 2.050 200 9000",
        "1007.000 2.400 200 9000",  # the slowest
        "1008.000 1.000 200 4000",  # cut by the stop: fewer bytes
        "1008.500 0.500 499 300",  # cut by the stop: the client went away
        "1009.000 2.000 200 9000",  # within 1 s of the last line: left out
        "garbage",
        "1009.500 0.100 200 9000",  # the last line
    ]
    rows = llm_scale.parse_log(lines)
    assert len(rows) == 8 and rows[0] == (1002.0, 2.0, 200, 9000)
    window = llm_scale.steady_window(rows, ramp_s=3.0)
    assert window == (1004.0, 1008.5), window
    got = llm_scale.emitted(rows, window)
    assert got is not None
    assert got.streams == 3 and got.seconds == 4.5, got
    assert math.isclose(got.tokens_per_s, 3 * llm_scale.TOKENS / 4.5)
    assert got.stream_ms["p50"] == 2100.0 and got.stream_ms["p99"] == 2400.0, got.stream_ms
    ends = [1003.9, 1004.0, 1004.1, 1006.0, 1008.5, 1008.6]  # (low, high]: 3 of them
    assert math.isclose(llm_scale.received(ends, window), 3 * llm_scale.TOKENS / 4.5)
    assert llm_scale.steady_window(llm_scale.parse_log(["1002.000 2.000 200 9000"]), ramp_s=3.0) is None
    assert llm_scale.steady_window([], ramp_s=3.0) is None
    assert llm_scale.emitted(rows[:1], (1001.0, 1003.0)) is None  # one stream is too few


def test_scale_verdicts_from_nginx_and_the_client_at_rest() -> None:
    """Achieved over what nginx emitted, nginx's p99 time per stream over ours, and the timestamp error: the
    most the full load adds over the client at rest to ITL p99 or TTFT p99."""
    from bench import llm_scale

    def run(tokens: float, stream_p99: float, itl_p99: float, ttft_p99: float) -> llm_scale.Run:
        return llm_scale.Run(
            window_tokens_per_s=tokens,
            latency_ms={"p50": 2075.0, "p99": stream_p99},
            itl_ms={"p50": 20.5, "p99": itl_p99},
            ttft_ms={"p50": 0.5, "p99": ttft_p99},
            emitted=llm_scale.Emitted(streams=1000, seconds=1.0, stream_ms={"p50": 2070.0, "p99": 2080.0, "mean": 1}),
            reference=llm_scale.Run(itl_ms={"p50": 20.5, "p99": 21.0}, ttft_ms={"p50": 0.3, "p99": 0.6}),
        )

    good = run(99_500.0, 2085.0, itl_p99=21.8, ttft_p99=1.2)  # adds 0.8 and 0.6 ms
    assert llm_scale.timestamp_error(good) == pytest.approx(0.8)
    _, verdicts = llm_scale.render([good], streams=2000)
    assert dict(verdicts) == {
        "achieved / emitted tokens >= 0.99": True,
        "every stream keeps its rate (p99) >= 0.99": True,
        "timestamp error p99 (upper bound) <= 1 ms": True,
    }
    slow = run(98_000.0, 2200.0, itl_p99=21.2, ttft_p99=2.0)  # behind nginx; TTFT p99 adds 1.4 ms
    table, verdicts = llm_scale.render([slow], streams=2000)
    assert set(dict(verdicts).values()) == {False}, verdicts
    assert "| achieved / emitted | 0.980 | 0.980 to 0.980 | >= 0.99 | **no** |" in table
    assert "| every stream keeps its rate: nginx's p99 / ours | 0.9455 |" in table
    assert llm_scale.timestamp_error(llm_scale.Run(itl_ms={"p99": 21.0}, ttft_ms={"p99": 1.0})) is None


def test_staggered_user_writes_the_times_of_its_successful_streams(tmp_path: Path) -> None:
    """The scale row's Locust file: HighUser's loop, and at quit the wall-clock time of each successful
    request (a failed one is not a stream received), one per line. In a child: importing Locust patches
    the standard library with gevent."""
    import subprocess
    import sys

    script = """
import itertools
from bench.locustfiles import staggered
assert staggered.StaggeredUser.back_to_back and staggered.StaggeredUser.wait_time(None) == 0
staggered.time.time = iter([100.25, 101.5]).__next__
staggered._record(exception=None)
staggered._record(exception=RuntimeError("cut"))
staggered._record(exception=None)
staggered._write()
"""
    out = tmp_path / "ends.txt"
    env = {**os.environ, "BENCH_ENDS_OUT": str(out)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text() == "100.250000\n101.500000\n"


def test_pinning_gives_nginx_the_last_cpu_and_the_client_the_others() -> None:
    from bench import llm_scale

    assert llm_scale.Pinning.split({0}) is None
    pinning = llm_scale.Pinning.split({3, 0, 2, 1})
    assert pinning == llm_scale.Pinning(server=frozenset({3}), client=frozenset({0, 1, 2}))
    assert pinning.wrap(["locust", "-f", "x.py"]) == ["taskset", "-c", "0,1,2", "locust", "-f", "x.py"]


def test_pinning_moves_every_process_of_the_servers_group() -> None:
    """A real process group of two (as nginx's master and worker), moved to one CPU, and nothing else moved."""
    import subprocess

    from bench import llm_scale

    mine = os.sched_getaffinity(0)
    last = max(mine)
    group = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        members: list[int] = []
        while len(members) < 2 and time.monotonic() < deadline:
            found = subprocess.run(["pgrep", "-g", str(group.pid)], capture_output=True, text=True)
            members = [int(p) for p in found.stdout.split()]
        assert len(members) == 2, members
        moved = llm_scale.Pinning(server=frozenset({last}), client=frozenset()).pin_server(group.pid)
        assert moved == 2
        assert [os.sched_getaffinity(p) for p in members] == [{last}, {last}]
        assert os.sched_getaffinity(0) == mine  # this process is not in the group
    finally:
        os.killpg(group.pid, 9)
        group.wait()
