"""The generative rows of ``make bench``: ours against NVIDIA AIPerf on the same server, prompts and concurrency.

    python -m bench.llm [--duration 20] [--repeats 3] [--concurrency 8] [--servers litserve,triton] [--quick]
        [--output bench/RESULTS.md]

The server is the synthetic generator (:mod:`servers.generator`) behind LitServe's ``OpenAISpec``
(:mod:`servers.litserve_llm`), then behind Triton's ``generate_stream`` (:mod:`servers.triton`, AIPerf through
its template endpoint): a set prefill time, a set time per token and exactly ``--max-tokens`` tokens,
so both clients should measure the same time to first token, inter-token latency and output token throughput,
and any difference is the client's. The prompts are made once by our synthetic prompt generator
(``--input-tokens``: :mod:`locust_inference.synthetic_prompts`) with a word-level tokenizer made here, and
written to one file per client in its own format: the same texts for both. AIPerf gets the same tokenizer as a
local folder (nothing is downloaded; see :mod:`bench.aiperf`).

Each repeat runs ours then AIPerf (one client at a time); the table reports medians over the repeats and the
ratios of those medians with the range of the per-repeat ratios. A client's CPU is that of its whole process
group (AIPerf runs several processes), sampled from ``/proc`` every 0.25 s, over its steady window (from 1 s
after the server's first finished request to its last), divided by the output tokens the server generated in
that window. Nothing here is a test: a missed goal is reported, not failed. The section it writes in
bench/RESULTS.md sits between its own markers (:mod:`bench.sections`); ``bench.run`` keeps it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import aiperf, sections
from bench.clients import REPO, kill_all, run_main, run_process
from bench.cpu import SamplerThread
from servers.children import clean_env
from servers.launch import RunningServer, ServerStartError

__all__ = ["main"]

SECTION = "bench.llm"
PREFILL_MS = 50.0
TOKEN_MS = 10.0
OUTPUT_TOKENS = 64
INPUT_TOKENS = (128, 16)  # mean, standard deviation
PROMPTS = 64
SEED = 26
INTERVAL_S = 0.25
SETTLE_S = 1.0
GOAL_WITHIN = 0.05  # TTFT p50, ITL p50 and output token throughput within 5 % of AIPerf's
GOAL_CPU_RATIO = 0.2  # CPU per output token at most a fifth of AIPerf's
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------------
# Set-up: the tokenizer folder and the prompts


def make_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer (one token per whitespace-separated word) of the synthetic prompts' words and the
    generator's ``tok0``, ``tok1``, ..., saved as a folder that both our ``--tokenizer`` (its
    ``tokenizer.json``) and AIPerf (transformers' ``PreTrainedTokenizerFast``) load. Word-level so that
    both clients' token counts of the answers are the generator's own (its ``usage``): AIPerf counts output
    tokens with its tokenizer, not from ``usage``, and a sub-word tokenizer would make it count several
    tokens for each of the generator's, and so compare other numbers than ours."""
    from locust_inference.synthetic_prompts import WORDS
    from tokenizers import Tokenizer, models, pre_tokenizers

    from servers.generator import MAX_TOKENS_CAP, token

    folder.mkdir(parents=True, exist_ok=True)
    words = ["<unk>", "<|endoftext|>", *WORDS, *(token(i).strip() for i in range(MAX_TOKENS_CAP))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1_000_000,
        "unk_token": "<unk>",
        "eos_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def write_prompts(tokenizer: Path, workdir: Path) -> tuple[Path, Path, list[int]]:
    """The synthetic prompts, as our ``--prompts`` JSONL and as AIPerf's ``single_turn`` dataset."""
    from locust_inference import synthetic_prompts

    targets = synthetic_prompts.lengths(PROMPTS, *INPUT_TOKENS, SEED)
    texts = synthetic_prompts.make(targets, SEED, tokenizer=tokenizer / "tokenizer.json")
    ours, theirs = workdir / "prompts-ours.jsonl", workdir / "prompts-aiperf.jsonl"
    ours.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    theirs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return ours, theirs, targets


# --------------------------------------------------------------------------------------------------
# Measuring a client: its process group's CPU against the server's finished requests


def group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live process of group ``pgid``, by pid."""
    found: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            continue  # a process that just ended
    return found


def server_view(log: Path, since: int, where: str = "http") -> tuple[float | None, float | None]:
    """The server's own TTFT p50 and gap p50 (ms) of the requests finished after byte ``since`` of its timing
    log, as measured ``where``: ``http``, where each answer leaves LitServe's HTTP server
    (servers.litserve_llm.HttpTimingLog), or ``generator``, in the generator (Triton's HTTP front cannot be
    timed from Python: its hops are missing there)."""
    marker = f'"where": "{where}"'.encode()
    with log.open("rb") as f:
        f.seek(since)
        records = [json.loads(line) for line in f.read().splitlines() if marker in line]
    if not records:
        return None, None
    gaps = [g * 1000 for r in records for g in r["gaps_s"]]
    ttft = statistics.median(r["first_token_s"] * 1000 for r in records)
    return ttft, statistics.median(gaps) if gaps else None


class FinishedRequests:
    """The generator's count of finished requests: the lines of its timing log (one per request)."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self) -> int:
        try:
            with self.log.open("rb") as f:
                return sum(1 for line in f if b'"where": "generator"' in line)
        except FileNotFoundError:
            return 0


@dataclass
class GroupSampler(SamplerThread):
    """Samples a process group's CPU and the server's finished requests until stopped."""

    served: Callable[[], int]
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    def _run(self, pgid: int) -> None:
        # each process's latest reading, kept after it ends: the group's CPU never goes back when a process
        # exits (its parent's cutime would count it only once reaped, and then twice with this)
        seen: dict[int, float] = {}
        start = time.monotonic()
        while not self._done.is_set():
            seen.update(group_cpu_s(pgid))
            self.samples.append((time.monotonic() - start, sum(seen.values()), self.served()))
            self._done.wait(INTERVAL_S)

    def cpu_per_request(self) -> tuple[float, int] | None:
        """(CPU seconds per finished request, requests) over the steady window; None without one."""
        s = self.samples
        rising = [i for i in range(len(s) - 1) if s[i + 1][2] > s[i][2]]
        if not rising:
            return None
        first = s[rising[0] + 1][0]
        begin = next((i for i in rising if s[i][0] >= first + SETTLE_S), None)
        end = rising[-1] + 1
        if begin is None or end <= begin or s[end][2] <= s[begin][2]:
            return None
        requests = s[end][2] - s[begin][2]
        return (s[end][1] - s[begin][1]) / requests, requests


@dataclass
class Run:
    """One client's numbers in one repeat."""

    ttft_p50_ms: float | None = None
    itl_p50_ms: float | None = None
    tokens_per_s: float | None = None
    cpu_us_per_token: float | None = None
    requests: int | None = None
    server_ttft_p50_ms: float | None = None  # the server's own, over the same requests
    server_gap_p50_ms: float | None = None
    error: str | None = None


# --------------------------------------------------------------------------------------------------
# The two clients


@dataclass(frozen=True)
class Bench:
    url: str
    workdir: Path
    tokenizer: Path
    ours_prompts: Path
    aiperf_prompts: Path
    served: FinishedRequests
    concurrency: int
    server: str = "litserve"  # or triton (its generate extension)


SERVERS = {
    "litserve": "LitServe 0.2 `OpenAISpec` (async), `POST /v1/chat/completions`; ours `--api chat`, AIPerf "
    "`--endpoint-type chat`",
    "triton": "Triton (PyTriton, decoupled model), `POST /v2/models/synthetic_llm/generate_stream`; ours "
    "`--api generate`, AIPerf `--endpoint-type template` with a payload template and `response_field "
    "text_output`",
}
TRITON_TEMPLATE = '{"text_input": {{ text|tojson }}, "max_tokens": ' + str(OUTPUT_TOKENS) + "}"


def _cost(run: Run, sampler: GroupSampler) -> Run:
    measured = sampler.cpu_per_request()
    if measured is not None:
        run.cpu_us_per_token = measured[0] / OUTPUT_TOKENS * 1e6
    return run


def run_ours(bench: Bench, duration: int, repeat: int) -> Run:
    folder = bench.workdir / f"ours-{bench.server}-{repeat}"
    folder.mkdir()
    cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", str(bench.concurrency)]
    # every user at once (as AIPerf starts its streams), the statistics from then on
    cmd += [
        "-r",
        str(bench.concurrency * 100),
        "--reset-stats",
        "-t",
        f"{duration}s",
        "--host",
        bench.url,
        "--csv",
        str(folder / "run"),
    ]
    api = "chat" if bench.server == "litserve" else "generate"
    cmd += ["--only-summary", "--loglevel", "WARNING", "--api", api, "--prompts", str(bench.ours_prompts)]
    cmd += ["--max-tokens", str(OUTPUT_TOKENS), "--tokenizer", str(bench.tokenizer / "tokenizer.json"), "HighUser"]
    env = clean_env(SERVER=bench.server, MODEL_NAME="synthetic_llm")
    sampler = GroupSampler(bench.served)
    code, _ = run_process(cmd, env, duration + 90, folder / "locust.log", sampler)
    try:
        doc = json.loads((folder / "latency.json").read_text())
        entry = doc["requests"][f"{bench.server}/synthetic_llm"]
        tokens = entry["tokens"]
    except (OSError, ValueError, KeyError) as exc:
        return Run(error=f"locust exited {code}, no latency.json entry ({exc})")
    run = Run(
        ttft_p50_ms=tokens["ttft_ms"]["p50"],
        itl_p50_ms=tokens["itl_ms"]["p50"],
        tokens_per_s=tokens["output_tokens_per_s"],
        requests=entry["count"],
        error=f"locust exited {code}" if code != 0 else None,
    )
    return _cost(run, sampler)


def aiperf_command(bench: Bench, duration: int, artifacts: Path) -> list[str]:
    cmd = [str(aiperf.binary()), "profile", "--model", "synthetic_llm", "--url", bench.url]
    if bench.server == "triton":
        template = bench.workdir / "triton-template.json"
        template.write_text(TRITON_TEMPLATE)
        cmd += ["--endpoint-type", "template", "--custom-endpoint", "/v2/models/synthetic_llm/generate_stream"]
        cmd += ["--extra-inputs", f"payload_template:{template}", "--extra-inputs", "response_field:text_output"]
    else:
        cmd += ["--endpoint-type", "chat"]
    cmd += ["--streaming", "--concurrency", str(bench.concurrency)]
    cmd += ["--benchmark-duration", str(duration), "--input-file", str(bench.aiperf_prompts)]
    cmd += ["--custom-dataset-type", "single_turn", "--tokenizer", str(bench.tokenizer)]
    cmd += ["--output-tokens-mean", str(OUTPUT_TOKENS), "--artifact-dir", str(artifacts), "--ui-type", "none"]
    return cmd


def aiperf_env() -> dict[str, str]:
    # the Hugging Face offline variables unset: with them AIPerf refuses a local folder as a repo id
    env = clean_env()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name, None)
    return env


def run_aiperf(bench: Bench, duration: int, repeat: int) -> Run:
    artifacts = bench.workdir / f"aiperf-{bench.server}-{repeat}"
    artifacts.mkdir()
    sampler = GroupSampler(bench.served)
    cmd = aiperf_command(bench, duration, artifacts)
    code, _ = run_process(cmd, aiperf_env(), duration + 180, artifacts / "aiperf.log", sampler)
    exports = sorted(artifacts.rglob("profile_export_aiperf.json"))
    if not exports:
        tail = " | ".join((artifacts / "aiperf.log").read_text(errors="replace").strip().splitlines()[-3:])
        return Run(error=f"aiperf exited {code} without profile_export_aiperf.json: {tail[:300]}")
    try:
        export = aiperf.parse(exports[0])
    except (OSError, ValueError) as exc:
        return Run(error=str(exc))
    run = Run(
        ttft_p50_ms=export.ttft_p50_ms,
        itl_p50_ms=export.itl_p50_ms,
        tokens_per_s=export.output_token_throughput,
        requests=export.requests,
        error=f"aiperf exited {code}" if code != 0 else None,
    )
    return _cost(run, sampler)


# --------------------------------------------------------------------------------------------------
# The table


METRICS = (
    ("ttft_p50_ms", "TTFT p50 (ms)", "{:.2f}"),
    ("itl_p50_ms", "ITL p50 (ms)", "{:.3f}"),
    ("tokens_per_s", "output tokens/s", "{:,.1f}"),
    ("cpu_us_per_token", "client CPU per output token (µs)", "{:,.1f}"),
)
# What the server measured during each client's runs (no goal): which client's numbers are nearer the truth
SERVER_METRICS = (
    ("server_ttft_p50_ms", "server's own TTFT p50 during the client's runs (ms)", "{:.2f}"),
    ("server_gap_p50_ms", "server's own gap between tokens p50 (ms)", "{:.3f}"),
)


def _median(runs: list[Run], attr: str) -> float | None:
    values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None and r.error is None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def render(ours: list[Run], theirs: list[Run]) -> tuple[str, list[tuple[str, bool | None]]]:
    """The comparison table and the verdicts: (goal, met; None when not measured)."""
    lines = [
        "| measure | ours (median) | AIPerf (median) | ours / AIPerf | per-repeat range | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts: list[tuple[str, bool | None]] = []
    for attr, label, spec in METRICS:
        a, b = _median(ours, attr), _median(theirs, attr)
        ratio = a / b if a is not None and b else None
        per = [
            getattr(x, attr) / getattr(y, attr)
            for x, y in zip(ours, theirs, strict=True)
            if x.error is None and y.error is None and getattr(x, attr) is not None and getattr(y, attr)
        ]
        spread = f"{min(per):.3f} to {max(per):.3f}" if per else "n/a"
        if attr == "cpu_us_per_token":
            goal, ok = f"<= {GOAL_CPU_RATIO:g}", None if ratio is None else ratio <= GOAL_CPU_RATIO
        else:
            goal = f"within {GOAL_WITHIN:.0%}"
            ok = None if ratio is None else abs(ratio - 1) <= GOAL_WITHIN
        met = {True: "yes", False: "**no**", None: "not measured"}[ok]
        lines.append(
            f"| {label} | {_fmt(a, spec)} | {_fmt(b, spec)} | {_fmt(ratio, '{:.3f}')} | {spread} | {goal} | {met} |"
        )
        verdicts.append((f"{label}: ours / AIPerf {goal}", ok))
    for attr, label, spec in SERVER_METRICS:
        a, b = _median(ours, attr), _median(theirs, attr)
        lines.append(f"| {label} | {_fmt(a, spec)} | {_fmt(b, spec)} | | | (no goal) | |")
    errors = [f"- ours, repeat {i + 1}: {r.error}" for i, r in enumerate(ours) if r.error]
    errors += [f"- AIPerf, repeat {i + 1}: {r.error}" for i, r in enumerate(theirs) if r.error]
    if errors:
        lines += ["", "Runs that failed (left out of the medians):", *errors]
    return "\n".join(lines), verdicts


def _shown(run: Run) -> str:
    server = f"{_fmt(run.server_ttft_p50_ms, '{:.2f}')} ms, gap p50 {_fmt(run.server_gap_p50_ms, '{:.3f}')} ms"
    return (
        f"TTFT p50 {_fmt(run.ttft_p50_ms, '{:.2f}')} ms, ITL p50 {_fmt(run.itl_p50_ms, '{:.3f}')} ms, "
        f"{_fmt(run.tokens_per_s, '{:,.1f}')} tokens/s, {_fmt(run.cpu_us_per_token, '{:,.1f}')} µs CPU/token; "
        f"the server's own TTFT p50 {server}" + (f"  [{run.error}]" if run.error else "")
    )


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of this process's descendants (reaped) and its own: the bench's whole share."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICK


METHOD = """\
### How it was measured
- Servers: the synthetic generator with {prefill:g} ms to the first token, then one token every {token:g} ms,
  exactly {out} tokens an answer (`--max-tokens {out}`), counting prompt tokens with the same tokenizer, behind
  `servers/litserve_llm.py` (LitServe {litserve}, `OpenAISpec`, async; it sends `usage`) and behind
  `servers/triton.py` (PyTriton's tritonserver, the decoupled model `synthetic_llm` at `generate_stream`; no
  `usage`: both clients count with the tokenizer). One at a time, on 127.0.0.1, not pinned (both cores shared
  by server and client).
- Prompts: {prompts} synthetic prompts made by `--input-tokens {mean} --input-tokens-stddev {sd}` (seed
  {seed}) with a word-level tokenizer made by the bench (the prompts' words and the
  generator's `tokN`, one token each: AIPerf counts output tokens with its tokenizer, so it must count the
  generator's tokens as `usage` does), written as our `--prompts` JSONL and as
  AIPerf's `single_turn` file: the same texts. Both clients ask for `max_tokens` {out}; the tokenizer folder
  is passed to AIPerf (`--tokenizer DIR`), nothing downloaded.
- Ours: `locust -f locustfile.py --headless -u {c} -r {r} --reset-stats -t {duration}s --api chat --prompts ...
  --max-tokens {out} --tokenizer ... HighUser`; TTFT and ITL p50 and `output_tokens_per_s` from `latency.json`.
- AIPerf {aiperf_version}: `{aiperf_cmd}`; the same numbers from `profile_export_aiperf.json`
  (`time_to_first_token.p50`, `inter_token_latency.p50`, `output_token_throughput.avg`).
- The server's own TTFT and gaps (no goal), over the requests each client sent: LitServe's where each answer
  leaves its HTTP server (an ASGI middleware), from the request's arrival, so a client's TTFT should be this
  plus the loopback round trip; Triton's inside the generator (its HTTP front cannot be timed from Python), so
  the hops through Triton's front and Python backend are missing from it.
- CPU: each client's whole process group (AIPerf's several processes; Locust's one), from `/proc` every
  0.25 s, each process's user + system time (a process that ends keeps its last reading), over the steady
  window from 1 s after the server's first finished request to its last, divided by the output tokens the
  server generated in that window ({out} per finished request).
- {repeats} repeat(s), ours then AIPerf in each; medians over the repeats; a ratio is of the medians, the range
  that of the per-repeat ratios.
"""


@contextlib.contextmanager
def _server(name: str, args: list[str]) -> Iterator[RunningServer]:
    from servers.launch import litserve_llm_server, triton_server

    if name == "litserve":
        with litserve_llm_server(extra_args=args) as server:
            yield server
    else:
        with triton_server(models=["synthetic_llm"], extra_args=args) as server:
            yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="streams at once, both clients (default 8)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 s, 1 repeat, results not written")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file (default bench/RESULTS.md)")
    parser.add_argument("--servers", default="litserve,triton", help="litserve, triton or both (the default)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 8, 1
    if not 1 <= args.duration <= 3600 or not 1 <= args.repeats <= 50 or not 1 <= args.concurrency <= 512:
        parser.error("--duration 1-3600, --repeats 1-50, --concurrency 1-512")
    output = args.output or (None if args.quick else REPO / "bench" / "RESULTS.md")
    command = shlex.join(["python", "-m", "bench.llm", *(argv if argv is not None else sys.argv[1:])])
    try:
        aiperf.ensure()
    except aiperf.Unavailable as exc:
        print(f"note: AIPerf unavailable: {exc}", flush=True)
    started, load_start = time.monotonic(), loadavg()
    busy_start, own_start = machine_busy_s(), tree_cpu_s(os.getpid())
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if not servers or set(servers) - set(SERVERS):
        parser.error(f"--servers takes a comma-separated list of {', '.join(SERVERS)}")
    results: dict[str, tuple[list[Run], list[Run]]] = {name: ([], []) for name in servers}
    with tempfile.TemporaryDirectory(prefix="li-bench-llm-") as tmp:
        workdir = Path(tmp)
        tokenizer = make_tokenizer(workdir / "tokenizer")
        print(f"==> {PROMPTS} synthetic prompts of {INPUT_TOKENS[0]}±{INPUT_TOKENS[1]} tokens", flush=True)
        ours_prompts, aiperf_prompts, _ = write_prompts(tokenizer, workdir)
        for server_name in servers:
            log = workdir / f"timing-{server_name}.jsonl"
            server_args = ["--prefill-ms", str(PREFILL_MS), "--token-ms", str(TOKEN_MS)]
            server_args += ["--max-tokens", str(OUTPUT_TOKENS), "--slots", "512", "--timing-log", str(log)]
            server_args += ["--tokenizer", str(tokenizer / "tokenizer.json")]
            ours, theirs = results[server_name]
            try:
                with _server(server_name, server_args) as server:
                    print(f"==> {server_name}: the synthetic generator at {server.url}", flush=True)
                    bench = Bench(
                        server.url,
                        workdir,
                        tokenizer,
                        ours_prompts,
                        aiperf_prompts,
                        FinishedRequests(log),
                        args.concurrency,
                        server_name,
                    )
                    where = "http" if server_name == "litserve" else "generator"
                    for repeat in range(args.repeats):
                        for name, runner, runs in (("ours", run_ours, ours), ("AIPerf", run_aiperf, theirs)):
                            print(f"[{server_name}, repeat {repeat + 1}/{args.repeats}] {name} … ", end="", flush=True)
                            mark = log.stat().st_size if log.exists() else 0
                            if name == "AIPerf" and not aiperf.binary().exists():
                                run = Run(error="AIPerf is not installed (see the note above)")
                            else:
                                run = runner(bench, args.duration, repeat)
                                run.server_ttft_p50_ms, run.server_gap_p50_ms = server_view(log, mark, where)
                            runs.append(run)
                            print(_shown(run), flush=True)
            except ServerStartError as exc:
                print(f"note: {server_name} did not start: {str(exc).splitlines()[0]}", flush=True)
                ours.append(Run(error=f"the server did not start: {str(exc).splitlines()[0][:200]}"))
                theirs.append(Run(error="the server did not start"))
            finally:
                kill_all()
    busy = machine_busy_s() - busy_start
    own = tree_cpu_s(os.getpid()) - own_start
    minutes = (time.monotonic() - started) / 60
    tables, verdicts = [], []
    for name, (ours, theirs) in results.items():
        table, judged = render(ours, theirs)
        tables.append(f"### {SERVERS[name]}\n\n{table}")
        verdicts += [(f"{name}: {label}", ok) for label, ok in judged]
    from importlib.metadata import version

    shown = Bench("URL", Path(), Path("TOKENIZER_DIR"), Path(), Path("PROMPTS.jsonl"), FinishedRequests(Path()), 0)
    shown_cmd = shlex.join(aiperf_command(replace(shown, concurrency=args.concurrency), args.duration, Path("OUT")))
    shown_cmd += (
        "`; against Triton `--endpoint-type template --custom-endpoint /v2/models/synthetic_llm/generate_stream "
        f"--extra-inputs payload_template:FILE --extra-inputs response_field:text_output`, FILE holding "
        f"`{TRITON_TEMPLATE}"
    )
    body = (
        f"## Generative: ours vs AIPerf (token streaming)\n\n"
        f"Command: `{command}`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {args.duration} s per measurement, "
        f"{args.repeats} repeat(s), concurrency {args.concurrency}, {minutes:.1f} min in all. Written by "
        f"`bench/llm.py`; do not edit by hand.\n\n"
        f"Other jobs on the machine: load average {load_start} at start, {loadavg()} at end; of the "
        f"{busy:,.0f} CPU seconds the machine spent during the run, {max(0.0, busy - own):,.0f} were outside "
        f"this benchmark (its server and clients), i.e. other jobs shared the 2 cores"
        f"{' heavily' if busy - own > 0.5 * busy else ''}.\n\n"
        + "\n\n".join(tables)
        + "\n\n"
        + METHOD.format(
            litserve=version("litserve"),
            prefill=PREFILL_MS,
            token=TOKEN_MS,
            out=OUTPUT_TOKENS,
            prompts=PROMPTS,
            mean=INPUT_TOKENS[0],
            sd=INPUT_TOKENS[1],
            seed=SEED,
            c=args.concurrency,
            r=args.concurrency * 100,
            duration=args.duration,
            aiperf_version=aiperf.VERSION,
            aiperf_cmd=shown_cmd.replace(str(aiperf.binary()), "aiperf"),
            repeats=args.repeats,
        )
    )
    sections.publish(body, verdicts, output, SECTION)
    return 0


if __name__ == "__main__":
    run_main(main, "bench.llm", "the server and the clients it started are")
