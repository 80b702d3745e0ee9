"""Token streaming end to end: the real locustfile, run headless by Locust, against the synthetic generator
(servers/generator.py: 50 ms to the first token, then one token every 10 ms) behind LitServe's OpenAISpec
and Triton's generate_stream. Measured times are compared with the generator's own measurement of the
same requests (its timing log), never with a wall-clock bound.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GENERATOR_MAX_TOKENS, GENERATOR_PREFILL_MS, GeneratorServer, generator_args
from locust_inference import generative, generative_options
from locust_inference.options import Settings
from locust_inference.results_schema import TokenEntry
from support.runs import REPO_ROOT, clean_env, processes, run_locust
from test_locust_e2e import TIMELINE_LOCUSTFILE, most_in_flight

from servers.launch import litserve_llm_server

# How far the client's time to first token may lie above the server's own (arrival to first token): the
# loopback round trip and the hops the server's measurement does not see. LitServe's is taken where the
# answer leaves its HTTP server (servers.litserve_llm.HttpTimingLog): only the round trip is missing.
# Triton's HTTP front cannot be timed from Python: its measurement is the generator's own, in PyTriton's
# proxy, which misses the hops from the HTTP front through the Python backend to the proxy and back.
TTFT_OVERHEAD_MS = {"litserve": 2.0, "triton": 10.0}  # seen: 0.5 and 4.2 ms
# How far the client's inter-token p50 may lie from the gaps the generator measured between its emissions
ITL_TOLERANCE_MS = 0.5
MAX_TOKENS = 32
TOKEN_PROBE_LOCUSTFILE = REPO_ROOT / "tests" / "support" / "locustfiles" / "token_probe.py"


def api_args(server: str) -> tuple[list[str], dict[str, str]]:
    """The options and environment of a run against ``server``'s generator."""
    if server == "litserve":
        return ["--api", "chat"], {"SERVER": "litserve", "MODEL_NAME": "synthetic_llm"}
    return ["--api", "generate"], {"SERVER": "triton", "MODEL_NAME": "synthetic_llm"}


def generative_run(
    tmp_path: Path, gen: GeneratorServer, server: str, *args: str, users: int = 2, run_time: str = "4s"
) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """Runs HighUser against the generator; returns latency.json's entry, the generator's timings of the
    run's requests, and the run."""
    options, env = api_args(server)
    mark = gen.mark()
    run = run_locust(
        tmp_path, "--host", gen.url, *options, *args, "HighUser", env=clean_env(**env), users=users, run_time=run_time
    )
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads((run.csv_prefix.parent / "latency.json").read_text())
    return document["requests"][f"{server}/synthetic_llm"], gen.timings(mark), run


@pytest.fixture(scope="module", params=["litserve", "triton"])
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One run of 2 users asking for 32 tokens, on each server."""
    server = request.param
    gen: GeneratorServer = request.getfixturevalue(f"{server}_llm")
    tmp = tmp_path_factory.mktemp(f"measured-{server}")
    mark = gen.mark()
    entry, timings, run = generative_run(tmp, gen, server, "--max-tokens", str(MAX_TOKENS))
    edge = gen.timings(mark, "http") if server == "litserve" else timings
    yield {"server": server, "entry": entry, "timings": timings, "edge": edge, "run": run}


def test_output_token_count_is_exact(measured: dict[str, Any]) -> None:
    tokens = measured["entry"]["tokens"]
    done = tokens["token_requests"]  # the approximate ones (counted by chunks) among them
    assert done == measured["entry"]["count"] > 0 and tokens["no_token_requests"] == 0
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == MAX_TOKENS, tokens["output_tokens"]
    assert tokens["output_tokens_total"] == MAX_TOKENS * done
    assert all(t["tokens"] == MAX_TOKENS for t in measured["timings"])
    # OpenAI servers send usage; Triton's generate_stream does not: its counts are chunks, labelled approximate
    assert tokens["approximate"] is (measured["server"] == "triton")
    assert tokens["approximate_requests"] == (done if measured["server"] == "triton" else 0)


def test_time_to_first_token_is_the_generators_plus_the_round_trip(measured: dict[str, Any]) -> None:
    ttft = measured["entry"]["tokens"]["ttft_ms"]
    server_ms = statistics.median(t["first_token_s"] * 1000 for t in measured["edge"])
    assert ttft["p50"] >= GENERATOR_PREFILL_MS
    # the histogram keeps 3 significant digits: 0.1 % below is the same value
    print(f"{measured['server']}: client TTFT p50 {ttft['p50']:.3f} ms, server's {server_ms:.3f} ms")
    assert server_ms * 0.999 <= ttft["p50"] <= server_ms + TTFT_OVERHEAD_MS[measured["server"]], (ttft, server_ms)


def test_inter_token_latency_is_the_generators_gap(measured: dict[str, Any]) -> None:
    itl = measured["entry"]["tokens"]["itl_ms"]
    gaps = statistics.median(g * 1000 for t in measured["edge"] for g in t["gaps_s"])
    print(f"{measured['server']}: client ITL p50 {itl['p50']:.3f} ms, server's gaps p50 {gaps:.3f} ms")
    assert abs(itl["p50"] - gaps) <= ITL_TOLERANCE_MS, (itl, gaps)
    # time per output token: (end - first token) / (tokens - 1), the mean gap of each request
    tpot = measured["entry"]["tokens"]["tpot_ms"]
    means = statistics.median(sum(t["gaps_s"]) * 1000 / len(t["gaps_s"]) for t in measured["timings"])
    assert abs(tpot["p50"] - means) <= ITL_TOLERANCE_MS, (tpot, means)


def test_locust_counts_one_entry_per_request(measured: dict[str, Any]) -> None:
    run, entry = measured["run"], measured["entry"]
    stats = run.stats(f"{measured['server']}/synthetic_llm")
    assert int(stats["Failure Count"]) == 0, run.failures()
    # one Locust entry per request, end to end: no second entry for the first token
    with open(f"{run.csv_prefix}_stats.csv", newline="") as f:
        names = [row["Name"] for row in csv.DictReader(f) if row["Name"] != "Aggregated"]
    assert names == [f"{measured['server']}/synthetic_llm"]
    assert int(stats["Request Count"]) <= entry["count"]  # Locust's CSV may miss the last partial second


def test_summary_shows_token_percentiles(measured: dict[str, Any]) -> None:
    out = measured["run"].stdout + measured["run"].stderr
    assert "time to first token" in out and "output tokens/s" in out, out[-3000:]


def test_without_max_tokens_the_server_cap_is_the_length(litserve_llm: GeneratorServer, tmp_path: Path) -> None:
    entry, timings, _ = generative_run(tmp_path, litserve_llm, "litserve", users=1, run_time="2s")
    tokens = entry["tokens"]
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == GENERATOR_MAX_TOKENS
    assert all(t["tokens"] == GENERATOR_MAX_TOKENS for t in timings)


def test_eight_users_in_one_process_have_eight_streams_in_flight(litserve_llm: GeneratorServer, tmp_path: Path) -> None:
    """gevent-safety for streams: each user's greenlet waits in the hub while its tokens arrive."""
    report = tmp_path / "timeline.json"
    run = run_locust(
        tmp_path,
        "--host",
        litserve_llm.url,
        "--api",
        "chat",
        "--max-tokens",
        "16",
        "HighUser",
        locustfile=TIMELINE_LOCUSTFILE,
        env=clean_env(SERVER="litserve", MODEL_NAME="synthetic_llm", TIMELINE_REPORT=str(report)),
        users=8,
        run_time="3s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    intervals = json.loads(report.read_text())["intervals"]
    assert most_in_flight(intervals) == 8, f"{len(intervals)} requests"


def test_open_loop_time_to_first_token_counts_from_the_intended_send(tmp_path: Path) -> None:
    """One slot, 50 ms a request (one token each), one request in flight, the others queued on the client:
    request k is meant for 20k ms (50/s) and cannot be sent before 50k ms, so its time to first token from
    the intended send is at least 30k + 50 ms and the median of n requests at least 30 ms * (n/2 - 1),
    growing with the run, while from the actual send it would stay about 50 ms."""
    log = tmp_path / "timing.jsonl"
    with litserve_llm_server(extra_args=generator_args(log, slots=1)) as server:
        run = run_locust(
            tmp_path,
            "--host",
            server.url,
            "--api",
            "chat",
            "--max-tokens",
            "1",
            "--rate",
            "50",
            "--max-in-flight",
            "1",
            "--overload",
            "queue",
            "LowUser",
            env=clean_env(SERVER="litserve", MODEL_NAME="synthetic_llm"),
            run_time="3s",
        )
    assert run.returncode == 0, run.stderr[-3000:]
    entry = json.loads((run.csv_prefix.parent / "latency.json").read_text())["requests"]["litserve/synthetic_llm"]
    n, ttft = entry["tokens"]["token_requests"], entry["tokens"]["ttft_ms"]
    assert n > 10 and ttft["p50"] >= 30 * (n / 2 - 1), (n, ttft)
    # the server saw each request alone: from the actual send, the first token came after the prefill
    assert entry["service_ms"]["p50"] < ttft["p50"] / 2, (entry["service_ms"], ttft)


def test_latency_json_tokens_section_is_written_as_its_schema_says(measured: dict[str, Any]) -> None:
    tokens = measured["entry"]["tokens"]
    assert set(tokens) == set(TokenEntry.__required_keys__ | TokenEntry.__optional_keys__)
    assert tokens["users"] == 2
    assert tokens["output_tokens_per_s_per_user"] == pytest.approx(tokens["output_tokens_per_s"] / 2)


def test_two_worker_processes_merge_their_token_measures(litserve_llm: GeneratorServer, tmp_path: Path) -> None:
    """Locust's --processes: the workers' reports carry the token histograms and counters to the master."""
    entry, timings, _ = generative_run(
        tmp_path, litserve_llm, "litserve", "--max-tokens", "8", *processes(2), users=4, run_time="3s"
    )
    tokens = entry["tokens"]
    assert tokens["token_requests"] == entry["count"] > 0 and tokens["users"] == 4
    assert tokens["output_tokens_total"] == 8 * entry["count"] == tokens["output_tokens"]["mean"] * entry["count"]
    assert tokens["ttft_ms"]["p50"] >= GENERATOR_PREFILL_MS
    assert len(timings) >= entry["count"]  # the server answered at least every request counted


def test_without_streaming_tokens_come_from_usage_and_there_is_no_first_token(
    litserve_llm: GeneratorServer, tmp_path: Path
) -> None:
    entry, _, _ = generative_run(tmp_path, litserve_llm, "litserve", "--max-tokens", "8", "--no-stream", users=1)
    tokens = entry["tokens"]
    assert tokens["token_requests"] == entry["count"] > 0 and tokens["approximate"] is False
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == 8
    assert tokens["input_tokens"]["min"] > 0  # the prompt's words, from usage
    assert tokens["ttft_ms"] == {} and tokens["itl_ms"] == {}


def test_goodput_counts_the_requests_that_met_every_objective(litserve_llm: GeneratorServer, tmp_path: Path) -> None:
    """One token a request: no time per output token to miss, and a day is no bound on latency, so every
    request meets both objectives, in two worker processes whose counts the master adds."""
    entry, _, _ = generative_run(
        tmp_path,
        litserve_llm,
        "litserve",
        "--max-tokens",
        "1",
        "--token-slo",
        "tpot_p99=1ms",
        "--token-slo",
        "latency_p99=86400s",
        *processes(2),
        users=2,
        run_time="3s",
    )
    slo = entry["tokens"]["slo"]
    assert slo["met"] == slo["judged"] == entry["count"] > 0 and slo["attainment"] == 1.0, slo
    assert slo["objectives"] == {"tpot_p99": 1.0, "latency_p99": 86_400_000.0}
    assert slo["held"] == {"tpot_p99": None, "latency_p99": True}
    assert slo["goodput_per_s"] == pytest.approx(entry["requests_per_s"])


def test_goodput_is_zero_when_the_first_token_cannot_come_in_time(
    litserve_llm: GeneratorServer, tmp_path: Path
) -> None:
    """The generator's prefill is 50 ms: no time to first token is within 40 ms."""
    entry, _, run = generative_run(
        tmp_path, litserve_llm, "litserve", "--max-tokens", "4", "--token-slo", "ttft_p50=40ms", users=1, run_time="2s"
    )
    slo = entry["tokens"]["slo"]
    assert slo["met"] == 0 and slo["judged"] == entry["count"] > 0 and slo["held"] == {"ttft_p50": False}, slo
    assert "goodput 0.00 req/s: 0 of" in run.stdout


def test_debug_requests_logs_the_tokens_and_never_a_secret(litserve_llm: GeneratorServer, tmp_path: Path) -> None:
    options, env = api_args("litserve")
    run = run_locust(
        tmp_path,
        "--host",
        litserve_llm.url,
        *options,
        "--max-tokens",
        "3",
        "--header",
        "X-Api-Key: sekrit-value",
        "HighUser",
        env=clean_env(**env, DEBUG_REQUESTS="1", INFERENCE_AUTH_TOKEN="tok-sekrit"),
        run_time="2s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    logged = [line for line in run.stderr.splitlines() if "locust_inference.debug" in line]
    assert logged and all("output_tokens=3 (usage) chunks=3" in line and " ttft=" in line for line in logged)
    assert "sekrit" not in run.stdout + run.stderr


def test_a_sweep_of_a_generative_server_has_token_measures_and_goodput_per_step(
    litserve_llm: GeneratorServer, tmp_path: Path
) -> None:
    """sweepfile.py over concurrency 1 and 3: each step's TTFT, ITL, tokens/s and the requests that met every
    objective (a day is no bound on latency: all of them), in sweep.json, sweep.csv and the summary."""
    run = run_locust(
        tmp_path,
        "--host",
        litserve_llm.url,
        "--api",
        "chat",
        "--max-tokens",
        "4",
        "--token-slo",
        "latency_p99=86400s",
        "--sweep-concurrency",
        "1,3",
        "--sweep-window",
        "3",
        "--sweep-warmup",
        "1",
        "--sweep-stable-windows",
        "2",
        "--sweep-max-windows",
        "3",
        locustfile=REPO_ROOT / "sweepfile.py",
        env=clean_env(SERVER="litserve", MODEL_NAME="synthetic_llm"),
        timeout=240,
        run_time="100s",  # a bound only: the sweep ends the run
    )
    assert run.returncode == 0, run.stderr[-3000:]
    steps = json.loads((tmp_path / "sweep.json").read_text())["steps"]
    assert [s["users"] for s in steps] == [1, 3]
    for step in steps:
        tokens = step["tokens"]
        assert tokens["ttft_ms"]["p50"] >= GENERATOR_PREFILL_MS and tokens["itl_ms"]["p50"] > 0
        assert tokens["slo_met"] == tokens["slo_judged"] > 0 and tokens["goodput_per_s"] > 0, tokens
        assert tokens["approximate"] is False and tokens["output_tokens_per_s"] > 0
    with (tmp_path / "sweep.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    expected = [pytest.approx(s["tokens"]["ttft_ms"]["p50"], abs=1e-3) for s in steps]
    assert [float(r["ttft_p50_ms"]) for r in table] == expected
    assert "Tokens per step" in run.stdout


@pytest.mark.parametrize("server", ["litserve", "triton"])
def test_each_request_gets_exactly_its_prompts_output_length(
    request: pytest.FixtureRequest, tmp_path: Path, server: str
) -> None:
    """--max-tokens 16-64: each built-in prompt's body asks for its own length (drawn with --seed); every
    request reports exactly the count its body asked for, whichever body it was."""
    gen: GeneratorServer = request.getfixturevalue(f"{server}_llm")
    options, env = api_args(server)
    report = tmp_path / "tokens.json"
    run = run_locust(
        tmp_path,
        "--host",
        gen.url,
        *options,
        "--max-tokens",
        "16-64",
        "--seed",
        "3",
        "HighUser",
        locustfile=TOKEN_PROBE_LOCUSTFILE,
        env=clean_env(**env, TOKEN_REPORT=str(report)),
        users=2,
        run_time="4s",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    settings = Settings(
        server=server,
        model="synthetic_llm",
        host=gen.url,
        image=Path("unused"),
        seed=3,
        generative=generative_options.resolve(argparse.Namespace(api=options[1], max_tokens="16-64")),
    )
    expected = generative.output_lengths(settings, len(generative.BUILTIN_PROMPTS))
    assert len(set(expected)) > 1, expected  # the prompts ask for different lengths
    reported = json.loads(report.read_text())
    source = "chunks" if server == "triton" else "usage"
    assert len({index for index, *_ in reported}) > 1, reported  # several bodies were sent
    assert reported == [[index, expected[index], source, True] for index, *_ in reported]


def test_triton_generate_without_streaming_accounts_for_every_success(
    triton_llm: GeneratorServer, tmp_path: Path
) -> None:
    entry, _, run = generative_run(tmp_path, triton_llm, "triton", "--no-stream", "--max-tokens", "1", users=1)
    assert int(run.stats("triton/synthetic_llm")["Failure Count"]) == 0 and entry["count"] > 0
    tokens = entry["tokens"]
    # no usage from /generate: each whole answer is one chunk, counted and labelled approximate
    assert tokens["token_requests"] == tokens["approximate_requests"] == entry["count"], tokens
    assert tokens["output_tokens_total"] == entry["count"] and tokens["no_token_requests"] == 0, tokens


def test_triton_generate_refuses_a_model_of_several_responses(triton_llm: GeneratorServer, tmp_path: Path) -> None:
    """/generate answers one response: a longer answer Triton refuses (with HTTP 200 and an error object),
    which every request reports as a failure with Triton's reason."""
    options, env = api_args("triton")
    refused = run_locust(
        tmp_path,
        "--host",
        triton_llm.url,
        *options,
        "--no-stream",
        "--max-tokens",
        "4",
        "HighUser",
        env=clean_env(**env),
        run_time="2s",
    )
    assert refused.returncode == 1, refused.stderr[-3000:]  # Locust's status when requests failed
    stats = refused.stats("triton/synthetic_llm")
    assert int(stats["Failure Count"]) == int(stats["Request Count"]) > 0
    (failure,) = refused.failures()
    assert "generate expects model to produce exactly" in failure["Error"], failure
