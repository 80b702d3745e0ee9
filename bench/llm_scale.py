"""The scale row of the generative benchmark: many concurrent token streams in one Locust process against a
null SSE server.

    python -m bench.llm_scale [--streams 2000] [--duration 30] [--repeats 3] [--quick] [--output bench/RESULTS.md]

The server is nginx (one worker) with the echo module playing a scripted OpenAI chat stream at
``POST /v1/chat/completions``: :data:`TOKENS` chunks of one token each, ``echo_flush`` after each and
``echo_sleep`` :data:`GAP_S` (20 ms: 50 tokens/s per stream) between them, then a usage chunk and
``data: [DONE]``. With 2,000 streams that is 100,000 tokens/s offered. A Python server could not emit that;
nginx spends a few µs per chunk. nginx runs with ``timer_resolution 1ms``: without it, its streams fell
behind the script as they grew in number while its worker stayed far from a full core (1,000 streams of
h2load's took 2.5 times the script's 2 s each), so the server, not the client, set the pace.

The load: the users (``StaggeredUser`` of ``bench/locustfiles/staggered.py``: ``HighUser``, asking again
as soon as a stream ends) all start at once and each sends its first request after a random wait of up to
one stream's length (``--stagger``), so that their streams are spread in time as independent users' would
be. Locust starts each second's users in one batch, and streams of equal length started together stay in
step: every 20 ms nginx would emit, and any client would read, one burst of 2,000 chunks, the last behind
the 1,999 before it.

What is measured. **Achieved / emitted**, in the steady window (from the users' stagger plus one stream plus 1
s after nginx's first stream began, to 1 s before its last line, in wall-clock time): ours is the successful
streams Locust reported in the window (the staggered user's file writes their times) times :data:`TOKENS`
(each stream's ``usage`` says so, and Locust's own count in ``latency.json`` agrees); emitted is nginx's
complete streams (its access log has a line per stream: status 200 and every byte) that ended in the same
window, times :data:`TOKENS`. A client that fell behind would end each stream later than nginx and, over the
window, receive fewer. **Every stream keeps its rate**: nginx's time to emit a stream (``$request_time``, ms
resolution: from the request's first byte to the stream's last) against ours to receive one (Locust's
end-to-end latency: from sending the request to the stream's end), at p99 and p50: a client that fell behind
would finish its streams later than nginx sent them. **Our timestamp error**: nginx keeps no per-chunk log at
this rate and its time variables have ms resolution, so the time each chunk left is not known to the µs.
Instead each repeat first runs the same client with :data:`REFERENCE_STREAMS` streams: at rest, its
inter-token latency (ITL) and time to first token (TTFT) show nginx's own pace and jitter (its 1 ms timer).
What the full load adds to the ITL p99 and to the TTFT p99 over that, the larger of the two, bounds how late
our timestamps are at p99: nginx's jitter cancels, while what nginx does worse under the full load stays in
and counts against us. The client's CPU (its process, sampled from ``/proc`` every 0.25 s) is taken in cores
over the steady part of the run and divided by the tokens per second; beside it, its threads' run-queue wait
(ready to run, not running) over the same time, in cores: on a machine shared with other jobs this shows how
much the client was held back by them rather than by its own work.

For comparison, in each repeat: h2load (nghttp2's C load generator, ``--h1``) opens the same number of
connections to the same server for the same time, each posting the chat request again as soon as its stream
ends, and reads the streams without parsing them; its completed streams times :data:`TOKENS` per second is
what the server delivers to a client that costs next to nothing. Its connections all start at once (it has no
ramp in a timed run), so its streams stay in step and it counts whole streams that ended within its time:
this rate is the server's, not a goal.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import nginx, sections
from bench.clients import REPO, kill_all, parse_h2load, run_main, run_process
from bench.cpu import SamplerThread
from bench.llm import TICK, loadavg, machine_busy_s, tree_cpu_s
from servers import children
from servers.children import clean_env
from servers.launch import live_group_members

__all__ = ["main"]

SECTION = "bench.llm_scale"
SECTION_PINNED = "bench.llm_scale.pinned"  # --pin
TOKENS = 100  # per stream: 2 s at 50 tokens/s, then the user asks again
GAP_S = 0.02
STREAM_S = TOKENS * GAP_S  # one stream's length, as nginx's script plays it
# --stagger: the users' first requests are spread over one stream's length, so that the streams start spread
# out as independent users' would (Locust starts a second's users together; 2,000 streams in step would make
# nginx emit, and any client read, one burst of 2,000 chunks every 20 ms)
STAGGER_S = STREAM_S
MODEL = "null_llm"
GOAL_ACHIEVED = 0.99
GOAL_TIMESTAMP_MS = 1.0
REFERENCE_STREAMS = 50  # a client at rest: what nginx's own pace and jitter look like to it
REFERENCE_DURATION_S = 20  # long enough for a few hundred first tokens
ACCESS_LOG = "access.log"  # nginx's line per stream: end time, its time to emit the stream, status, bytes


def _chunk(content: str | None = None, usage: dict[str, int] | None = None) -> str:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    data: dict[str, object] = {"id": "x", "object": "chat.completion.chunk", "model": MODEL, "choices": choices}
    if usage is not None:
        data["usage"] = usage
    return f"data: {json.dumps(data, separators=(',', ':'))}\\n\\n"  # nginx turns \\n into a newline


def render_config(port: int, workdir: Path, streams: int) -> str:
    """nginx: one worker, the scripted stream at /v1/chat/completions, /health and /status."""
    script = ["echo_read_request_body;"]
    for i in range(TOKENS):
        if i:
            script.append(f"echo_sleep {GAP_S};")
        script.append(f"echo -n '{_chunk(f'tok{i} ')}'; echo_flush;")
    usage = {"prompt_tokens": 1, "completion_tokens": TOKENS, "total_tokens": TOKENS + 1}
    script.append(f"echo -n '{_chunk(usage=usage)}data: [DONE]\\n\\n';")
    assert "$" not in "".join(script)  # the script's text, not nginx variables
    body = "\n            ".join(script)
    return f"""load_module {nginx.ECHO_MODULE};
worker_processes 1;
timer_resolution 1ms;
worker_rlimit_nofile {streams * 2 + 1024};
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections {streams * 2 + 256}; }}
http {{
    access_log off;
    log_format streams '$msec $request_time $status $bytes_sent';
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen {nginx.HOST}:{port} backlog=4096;
        location = /health {{ return 200 'ok'; }}
        location = /status {{ stub_status; }}
        location = /v1/chat/completions {{
            default_type text/event-stream;
            access_log {workdir}/{ACCESS_LOG} streams buffer=256k flush=1s;
            {body}
        }}
    }}
}}
"""


@contextlib.contextmanager
def sse_server(streams: int) -> Iterator[nginx.NullServer]:
    """nginx playing the scripted stream, in its own process group until the block exits."""
    workdir = Path(tempfile.mkdtemp(prefix="li-bench-sse-"))
    os.chmod(workdir, 0o755)  # the worker may run as nobody
    port = nginx.free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(render_config(port, workdir, streams))
    url = f"http://{nginx.HOST}:{port}"
    args = ["nginx", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    proc: subprocess.Popen[bytes] | None = None
    try:
        test = subprocess.run([*args[:1], "-t", "-q", *args[1:]], capture_output=True, text=True, check=False)
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected its configuration {conf}:\n{test.stderr}")
        with open(workdir / "stderr.log", "wb") as log:
            proc = children.start(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + nginx.START_TIMEOUT_S
        while not nginx._ready(f"{url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start on {url}; see {workdir / 'error.log'}")
            time.sleep(0.05)
        yield nginx.NullServer(url=url, pid=proc.pid, error_log=workdir / "error.log")
    finally:
        if proc is not None:
            children.stop(proc, signal.SIGQUIT, grace_s=5)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Emitted:
    """What nginx's access log says of one run's steady part: its complete streams, their rate in tokens and
    its time to emit each (``$request_time``: from the request's first byte to the stream's last, in ms)."""

    streams: int
    seconds: float
    stream_ms: dict[str, float]  # p50, p99, mean

    @property
    def tokens_per_s(self) -> float:
        return self.streams * TOKENS / self.seconds


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": ordered[(len(ordered) - 1) // 2],
        "p99": ordered[max(0, -(-len(ordered) * 99 // 100) - 1)],
        "mean": statistics.fmean(ordered),
    }


def parse_log(lines: list[str]) -> list[tuple[float, float, int, int]]:
    """nginx's access-log ``lines`` (``$msec $request_time $status $bytes_sent``) as tuples; lines cut by a
    flush, or not of that form, are left out."""
    rows: list[tuple[float, float, int, int]] = []
    for line in lines:
        try:
            end, took, status, size = line.split()
            rows.append((float(end), float(took), int(status), int(size)))
        except ValueError:
            continue
    return rows


def steady_window(rows: list[tuple[float, float, int, int]], ramp_s: float) -> tuple[float, float] | None:
    """The steady part of a run, in wall-clock time, from nginx's ``rows``: from ``ramp_s`` (the users'
    stagger and their first stream) plus 1 s after the first stream began, to 1 s before the last line
    (Locust stopping cuts the streams in flight). None when that leaves nothing."""
    if not rows:
        return None
    low = min(end - took for end, took, _, _ in rows) + ramp_s + 1.0
    high = max(end for end, _, _, _ in rows) - 1.0
    return (low, high) if high > low else None


def emitted(rows: list[tuple[float, float, int, int]], window: tuple[float, float]) -> Emitted | None:
    """nginx's view of ``window``: the complete streams (status 200 and the most bytes any stream was sent:
    the stop cuts those in flight) that ended in it. None when fewer than two."""
    full = max((size for _, _, status, size in rows if status == 200), default=None)
    low, high = window
    kept = [took * 1000 for end, took, status, size in rows if status == 200 and size == full and low < end <= high]
    if len(kept) < 2:
        return None
    return Emitted(streams=len(kept), seconds=high - low, stream_ms=_percentiles(kept))


def received(ends: list[float], window: tuple[float, float]) -> float:
    """Our tokens per second in ``window``: the successful streams Locust reported in it (``ends``, their
    wall-clock times), each of :data:`TOKENS` tokens (its ``usage`` says so; Locust's count agrees)."""
    low, high = window
    return sum(1 for t in ends if low < t <= high) * TOKENS / (high - low)


@dataclass
class Run:
    tokens_per_s: float | None = None  # Locust's count over its statistics' time (latency.json)
    window_tokens_per_s: float | None = None  # ours in the same window of time as ``emitted``
    itl_ms: dict[str, float] | None = None
    tpot_p50_ms: float | None = None
    ttft_ms: dict[str, float] | None = None
    latency_ms: dict[str, float] | None = None  # ours, per stream: from sending the request to its end
    emitted: Emitted | None = None  # nginx's view of the same run
    cpu_us_per_token: float | None = None
    cpu_cores: float | None = None  # the client's CPU over the steady part, in cores
    wait_cores: float | None = None  # its threads' run-queue wait over it (ready, not running), in cores
    server_cpu_cores: float | None = None  # nginx's, the same way
    server_wait_cores: float | None = None
    users: int | None = None
    failures: int | None = None
    error: str | None = None
    reference: Run | None = None  # the same client with REFERENCE_STREAMS streams: nginx's pace at rest
    h2load_tokens_per_s: float | None = None  # the server's bound: h2load's streams on the same server
    h2load_stream_s: float | None = None  # h2load's mean time for one whole stream
    h2load_error: str | None = None


def group_readings(pgid: int) -> tuple[float, float]:
    """(CPU s, run-queue wait s) of every thread of the live processes of group ``pgid``: the wait is the
    time a thread was ready to run but not running (``/proc/PID/task/TID/schedstat``, second field), the
    measure of how much other work on the cores held the client back."""
    cpu = wait = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            for task in os.scandir(Path(entry.path, "task")):
                wait += int(Path(task.path, "schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # a process or thread that just ended
    return cpu, wait


@dataclass
class SteadySampler(SamplerThread):
    """Samples the client's group (CPU, run-queue wait) and nginx's count of requests every 0.25 s."""

    served: Callable[[], int]
    server_pgid: int
    samples: list[tuple[float, float, float, int]] = field(default_factory=list)
    server_samples: list[tuple[float, float]] = field(default_factory=list)

    def _run(self, pgid: int) -> None:
        start = time.monotonic()
        while not self._done.is_set():
            self.samples.append((time.monotonic() - start, *group_readings(pgid), self.served()))
            self.server_samples.append(group_readings(self.server_pgid))
            self._done.wait(0.25)

    def rates(self) -> tuple[float, float, float, float] | None:
        """(CPU, run-queue wait) of the client, then of nginx, in cores over the steady part of the run: from
        2 s after nginx first saw requests (every stream open) to the last samples before the end (the streams
        all start together, so nginx's count rises in steps and cannot delimit a window by requests)."""
        first = next((s[0] for s in self.samples if s[3] > 0), None)
        if first is None:
            return None
        kept = [i for i, s in enumerate(self.samples) if s[0] >= first + 2.0][:-2]
        if len(kept) < 2 or self.samples[kept[-1]][0] <= self.samples[kept[0]][0]:
            return None
        a, b = self.samples[kept[0]], self.samples[kept[-1]]
        sa, sb = self.server_samples[kept[0]], self.server_samples[kept[-1]]
        seconds = b[0] - a[0]
        return (b[1] - a[1]) / seconds, (b[2] - a[2]) / seconds, (sb[0] - sa[0]) / seconds, (sb[1] - sa[1]) / seconds


class Served:
    """nginx's count of requests (each a stream), for the sampler's steady window."""

    def __init__(self, server: nginx.NullServer) -> None:
        self.server = server

    def __call__(self) -> int:
        try:
            return self.server.served()
        except OSError:
            return 0


@dataclass(frozen=True)
class Pinning:
    """``--pin``: nginx on the highest CPU this process may use, the client (Locust, h2load) on the others, so
    that each has its own and the table shows what nginx alone does with one core."""

    server: frozenset[int]
    client: frozenset[int]

    @classmethod
    def split(cls, cpus: set[int]) -> Pinning | None:
        """None with fewer than two CPUs: nothing to split."""
        ordered = sorted(cpus)
        return cls(frozenset(ordered[-1:]), frozenset(ordered[:-1])) if len(ordered) >= 2 else None

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` started on the client's CPUs."""
        return ["taskset", "-c", _cpus(self.client), *cmd]

    def pin_server(self, pgid: int) -> int:
        """Moves every thread of process group ``pgid`` (nginx's master and worker) to the server's CPUs;
        returns how many threads it moved."""
        moved = 0
        for pid in live_group_members(pgid):
            with contextlib.suppress(OSError):  # gone meanwhile
                for task in Path(f"/proc/{pid}/task").iterdir():
                    os.sched_setaffinity(int(task.name), self.server)
                    moved += 1
        return moved


def _build_profile() -> str:
    """The Cargo profile of the extension installed in .venv (the Makefile's stamp): make bench installs release;
    make test leaves release-nolto, whose client costs more CPU per token."""
    try:
        return (REPO / ".venv" / ".installed").read_text().strip() or "release"
    except OSError:
        return "unknown (no .venv/.installed)"


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def run_once(
    server: nginx.NullServer, streams: int, duration: int, folder: Path, *, pinning: Pinning | None = None
) -> Run:
    url = server.url
    folder.mkdir()
    log = server.error_log.parent / ACCESS_LOG
    offset = log.stat().st_size if log.exists() else 0
    cmd = [sys.executable, "-m", "locust", "-f", "bench/locustfiles/staggered.py", "--headless"]
    cmd += ["-u", str(streams), "-r", str(streams), "--reset-stats", "-t", f"{duration}s", "--host", url]
    cmd += ["--csv", str(folder / "run"), "--only-summary", "--loglevel", "WARNING"]
    cmd += ["--api", "chat", "--max-tokens", str(TOKENS), "--stagger", f"{STAGGER_S:g}", "StaggeredUser"]
    env = clean_env(SERVER="litserve", MODEL_NAME=MODEL)
    env["BENCH_ENDS_OUT"] = str(folder / "ends.txt")
    sampler = SteadySampler(Served(server), server.pid)
    if pinning is not None:
        cmd = pinning.wrap(cmd)
    code, _ = run_process(cmd, env, duration + 120, folder / "log", sampler)
    time.sleep(1.5)  # nginx writes its access log every second
    try:
        with open(log, "rb") as file:
            file.seek(offset)
            rows = parse_log(file.read().decode(errors="replace").splitlines())
        ends = [float(line) for line in (folder / "ends.txt").read_text().split()]
    except (OSError, ValueError):
        rows, ends = [], []
    try:
        entry = json.loads((folder / "latency.json").read_text())["requests"][f"litserve/{MODEL}"]
        tokens = entry["tokens"]
    except (OSError, ValueError, KeyError) as exc:
        tail = " | ".join((folder / "log").read_text(errors="replace").strip().splitlines()[-3:])
        return Run(error=f"locust exited {code}, no latency.json entry ({exc}): {tail[:300]}")
    window = steady_window(rows, STAGGER_S + STREAM_S)
    run = Run(
        tokens_per_s=tokens["output_tokens_per_s"],
        window_tokens_per_s=received(ends, window) if window and ends else None,
        itl_ms=tokens["itl_ms"],
        tpot_p50_ms=tokens["tpot_ms"]["p50"],
        ttft_ms=tokens["ttft_ms"],
        latency_ms=entry["latency_ms"],
        emitted=emitted(rows, window) if window else None,
        users=tokens["users"],
        failures=entry.get("failures"),
        error=f"locust exited {code}" if code != 0 else None,
    )
    rates = sampler.rates()
    if rates is not None and run.tokens_per_s:
        run.cpu_cores, run.wait_cores, run.server_cpu_cores, run.server_wait_cores = rates
        run.cpu_us_per_token = rates[0] / run.tokens_per_s * 1e6
    return run


def h2load_once(
    server: nginx.NullServer, streams: int, duration: int, folder: Path, run: Run, *, pinning: Pinning | None = None
) -> None:
    """h2load's streams on the same server for the same time, into ``run``'s ``h2load_*`` fields."""
    body = folder / "h2load-body.json"
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body.write_text(json.dumps({**request, "max_tokens": TOKENS}))
    cmd = ["h2load", "--h1", "-t1", f"-c{streams}", "-D", str(duration), "-d", str(body)]
    cmd += ["-H", "content-type: application/json", f"{server.url}/v1/chat/completions"]
    if pinning is not None:
        cmd = pinning.wrap(cmd)
    code, out = run_process(cmd, clean_env(), duration + 120, folder / "h2load.log")
    (folder / "h2load.out").write_text(out)
    result = parse_h2load(out)
    if code != 0 or result.error is not None or result.rate is None:
        run.h2load_error = f"h2load exited {code}" if code != 0 else result.error
        return
    run.h2load_tokens_per_s = result.rate * TOKENS
    run.h2load_stream_s = result.mean_ms / 1000 if result.mean_ms is not None else None


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def _get(values: dict[str, float] | None, key: str) -> float | None:
    return None if values is None else values.get(key)


def timestamp_error(run: Run) -> float | None:
    """An upper bound, in ms, of how late our timestamps are at p99: what the run's streams add over a client
    at rest (:data:`REFERENCE_STREAMS` streams on the same server) to the inter-token latency's p99 and to the
    time to first token's p99, whichever is larger. nginx's own pace and jitter (its 1 ms timer, its slack)
    are in both runs and cancel; what nginx does worse under the full load stays in, against us."""
    ref = run.reference
    if ref is None:
        return None
    added = []
    for ours, rest in ((run.itl_ms, ref.itl_ms), (run.ttft_ms, ref.ttft_ms)):
        a, b = _get(ours, "p99"), _get(rest, "p99")
        if a is None or b is None:
            return None
        added.append(a - b)
    return max(added)


def kept_rate(run: Run, key: str) -> float | None:
    """nginx's time to emit a stream over ours to receive one, at percentile ``key``: 1 when the client reads
    every stream as fast as nginx sends it."""
    ours = _get(run.latency_ms, key)
    return run.emitted.stream_ms[key] / ours if run.emitted and ours else None


def render(runs: list[Run], streams: int) -> tuple[str, list[tuple[str, bool | None]]]:
    good = [r for r in runs if r.error is None]
    refs = [r.reference for r in good if r.reference is not None and r.reference.error is None]
    offered = streams / GAP_S
    nominal = [r.tokens_per_s / offered if r.tokens_per_s is not None else None for r in good]
    server = [r.emitted.tokens_per_s if r.emitted else None for r in good]
    achieved = [
        r.window_tokens_per_s / r.emitted.tokens_per_s if r.window_tokens_per_s and r.emitted else None for r in good
    ]
    kept_p50 = [kept_rate(r, "p50") for r in good]
    kept_p99 = [kept_rate(r, "p99") for r in good]
    errors_ms = [timestamp_error(r) for r in good]
    itl = {k: _median([_get(r.itl_ms, k) for r in good]) for k in ("min", "p50", "p99", "max")}
    late = [r.itl_ms["p99"] - GAP_S * 1000 if r.itl_ms and "p99" in r.itl_ms else None for r in good]
    a, kept, err = _median(achieved), _median(kept_p99), _median(errors_ms)
    bound = [r.h2load_tokens_per_s / offered if r.h2load_tokens_per_s else None for r in good]
    ours_bound = [
        r.window_tokens_per_s / r.h2load_tokens_per_s if r.window_tokens_per_s and r.h2load_tokens_per_s else None
        for r in good
    ]
    ok_a = None if a is None else a >= GOAL_ACHIEVED
    ok_k = None if kept is None else kept >= GOAL_ACHIEVED
    ok_t = None if err is None else err <= GOAL_TIMESTAMP_MS

    def spread(values: list[float | None], spec: str) -> str:
        kept = [v for v in values if v is not None]
        return f"{spec.format(min(kept))} to {spec.format(max(kept))}" if kept else "n/a"

    def row(name: str, values: list[float | None], spec: str, goal: str = "", ok: bool | str | None = "") -> str:
        verdict = met[ok] if isinstance(ok, bool) or ok is None else ok
        return f"| {name} | {_f(_median(values), spec)} | {spread(values, spec)} | {goal} | {verdict} |"

    def pair(name: str, runs_: list[Run], field_: str, keys: tuple[str, ...]) -> str:
        values = [_median([_get(getattr(r, field_), k) for r in runs_]) for k in keys]
        return f"| {name} | {' / '.join(_f(v, '{:.3f}') for v in values)} | | | |"

    met = {True: "yes", False: "**no**", None: "not measured"}
    lines = [
        "| measure | median | per-repeat range | goal | met |",
        "|---|---|---|---|---|",
        f"| streams (users; first requests spread over {STAGGER_S:g} s) | {streams:,} | | | |",
        f"| offered tokens/s ({streams:,} x 50, the script's pace) | {offered:,.0f} | | | |",
        row(
            "achieved tokens/s (ours, Locust's count over its run: latency.json)",
            [r.tokens_per_s for r in good],
            "{:,.0f}",
        ),
        row("achieved tokens/s in the steady window", [r.window_tokens_per_s for r in good], "{:,.0f}"),
        row("emitted tokens/s in the same window (nginx's complete streams)", server, "{:,.0f}"),
        row("achieved / emitted", achieved, "{:.3f}", f">= {GOAL_ACHIEVED}", ok_a),
        row(
            "achieved over the whole run / offered (the run includes the stagger and the first streams)",
            nominal,
            "{:.3f}",
        ),
        pair("time to receive a stream, ours: p50 / p99 (ms)", good, "latency_ms", ("p50", "p99")),
        f"| time to emit a stream, nginx: p50 / p99 (ms) | "
        f"{_f(_median([r.emitted.stream_ms['p50'] if r.emitted else None for r in good]), '{:.0f}')} / "
        f"{_f(_median([r.emitted.stream_ms['p99'] if r.emitted else None for r in good]), '{:.0f}')} | | | |",
        row("every stream keeps its rate: nginx's p99 / ours", kept_p99, "{:.4f}", f">= {GOAL_ACHIEVED}", ok_k),
        row("the same at p50", kept_p50, "{:.4f}"),
        f"| ITL min / p50 / p99 / max (ms) | {' / '.join(_f(itl[k], '{:.3f}') for k in itl)} | | | |",
        pair(
            f"ITL p50 / p99 at {REFERENCE_STREAMS} streams (nginx's pace at rest; ms)", refs, "itl_ms", ("p50", "p99")
        ),
        pair(
            "TTFT p50 / p99 (ms; nginx sends the first token once it has read the request)",
            good,
            "ttft_ms",
            ("p50", "p99"),
        ),
        pair(f"TTFT p50 / p99 at {REFERENCE_STREAMS} streams (ms)", refs, "ttft_ms", ("p50", "p99")),
        row(
            f"our timestamp error at p99, upper bound: the most that {streams:,} streams add to ITL p99 or TTFT p99 "
            f"over {REFERENCE_STREAMS} (ms)",
            errors_ms,
            "{:.3f}",
            f"<= {GOAL_TIMESTAMP_MS:g} ms",
            ok_t,
        ),
        row("ITL p99 - 20 ms (nginx's slack included; ms)", late, "{:.3f}"),
        f"| TPOT p50 (ms; 20 = the script's pace) | {_f(_median([r.tpot_p50_ms for r in good]), '{:.3f}')} | | | |",
        row("h2load on the same server and streams: achieved / offered", bound, "{:.3f}"),
        row(
            f"h2load: mean time for a stream (s; the script's {STREAM_S:g})",
            [r.h2load_stream_s for r in good],
            "{:.2f}",
        ),
        row("ours (steady window) / h2load (its run)", ours_bound, "{:.3f}"),
        row("client CPU per token (µs)", [r.cpu_us_per_token for r in good], "{:.2f}"),
        row("client CPU (cores)", [r.cpu_cores for r in good], "{:.2f}"),
        row("client threads ready but not running (run-queue wait, cores)", [r.wait_cores for r in good], "{:.2f}"),
        f"| nginx CPU / run-queue wait (cores) | {_f(_median([r.server_cpu_cores for r in good]), '{:.2f}')} / "
        f"{_f(_median([r.server_wait_cores for r in good]), '{:.2f}')} | | | |",
    ]
    errors = [f"- repeat {i + 1}: {r.error}" for i, r in enumerate(runs) if r.error]
    errors += [
        f"- repeat {i + 1}, at {REFERENCE_STREAMS} streams: {r.reference.error}"
        for i, r in enumerate(runs)
        if r.reference is not None and r.reference.error
    ]
    errors += [f"- repeat {i + 1}, h2load: {r.h2load_error}" for i, r in enumerate(runs) if r.h2load_error]
    if errors:
        lines += ["", "Runs that failed (left out):", *errors]
    verdicts = [
        ("achieved / emitted tokens >= 0.99", ok_a),
        ("every stream keeps its rate (p99) >= 0.99", ok_k),
        ("timestamp error p99 (upper bound) <= 1 ms", ok_t),
    ]
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000, help="concurrent streams, one Locust process")
    parser.add_argument("--duration", type=int, default=30, help="seconds per measurement (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 streams, 10 s, 1 repeat, not written")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file (default bench/RESULTS.md)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="nginx on one CPU, the client on the others: whether nginx keeps its script's pace on a core of its "
        "own (written to a section of its own)",
    )
    args = parser.parse_args(argv)
    pinning = Pinning.split(os.sched_getaffinity(0)) if args.pin else None
    if args.pin and pinning is None:
        parser.error("--pin needs at least two CPUs")
    if args.quick:
        args.streams, args.duration, args.repeats = 200, 10, 1
    if not 1 <= args.streams <= 10_000 or not 1 <= args.duration <= 3600 or not 1 <= args.repeats <= 50:
        parser.error("--streams 1-10000, --duration 1-3600, --repeats 1-50")
    from bench.run import ensure_tools  # nginx, its echo module and h2load, as make bench installs them

    ensure_tools()
    output = args.output or (None if args.quick else REPO / "bench" / "RESULTS.md")
    command = shlex.join(["python", "-m", "bench.llm_scale", *(argv if argv is not None else sys.argv[1:])])
    started, load_start = time.monotonic(), loadavg()
    busy_start, own_start = machine_busy_s(), tree_cpu_s(os.getpid())
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="li-bench-scale-") as tmp, sse_server(args.streams) as server:
        print(f"==> null SSE server (nginx, 1 worker) at {server.url}", flush=True)
        if pinning is not None:
            moved = pinning.pin_server(server.pid)
            print(
                f"    pinned: nginx ({moved} threads) on CPU {sorted(pinning.server)}, the client on "
                f"{sorted(pinning.client)}",
                flush=True,
            )
        try:
            for repeat in range(args.repeats):
                print(f"[repeat {repeat + 1}/{args.repeats}] {args.streams} streams … ", end="", flush=True)
                folder = Path(tmp) / f"scale-{repeat}"
                rest = Path(tmp) / f"rest-{repeat}"
                reference = run_once(server, REFERENCE_STREAMS, REFERENCE_DURATION_S, rest, pinning=pinning)
                run = run_once(server, args.streams, args.duration, folder, pinning=pinning)
                run.reference = reference
                h2load_once(server, args.streams, args.duration, folder, run, pinning=pinning)
                runs.append(run)
                itl = run.itl_ms or {}
                print(
                    f"{_f(run.tokens_per_s, '{:,.0f}')} tokens/s "
                    f"(nginx {_f(run.emitted.tokens_per_s if run.emitted else None, '{:,.0f}')}), "
                    f"ITL p50 {_f(itl.get('p50'), '{:.3f}')} "
                    f"p99 {_f(itl.get('p99'), '{:.3f}')} ms, error <= {_f(timestamp_error(run), '{:.3f}')} ms, "
                    f"{_f(run.cpu_us_per_token, '{:.2f}')} µs CPU/token; "
                    f"h2load {_f(run.h2load_tokens_per_s, '{:,.0f}')} tokens/s"
                    + (f"  [{run.error}]" if run.error else ""),
                    flush=True,
                )
        finally:
            kill_all()
    busy, own = machine_busy_s() - busy_start, tree_cpu_s(os.getpid()) - own_start
    table, verdicts = render(runs, args.streams)
    body = (
        f"## Generative at scale: concurrent token streams in one Locust process{', pinned' if pinning else ''}\n\n"
        f"Command: `{command}`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {args.duration} s per measurement, "
        f"{args.repeats} repeat(s), {(time.monotonic() - started) / 60:.1f} min in all. Written by "
        f"`bench/llm_scale.py`; do not edit by hand. The extension's build: {_build_profile()}.\n\n"
        f"Other jobs on the machine: load average {load_start} at start, {loadavg()} at end; of the "
        f"{busy:,.0f} CPU seconds the machine spent during the run, {max(0.0, busy - own):,.0f} were outside "
        "this benchmark (nginx's worker is outside it too: it is not our child's child).\n\n"
        f"{table}\n\n"
        "### How it was measured\n"
        + "\n".join(
            f"- {p.strip()}"
            for p in (__doc__ or "").split("\n\n")[2:]
            if p.strip()  # the module's explanation of the server and of what is measured
        )
        + f"\n- Locust: `locust -f bench/locustfiles/staggered.py --headless -u {args.streams} -r {args.streams} "
        f"--reset-stats -t {args.duration}s --api chat --max-tokens {TOKENS} --stagger {STAGGER_S:g} StaggeredUser`, "
        + (
            f"one process, on CPU {_cpus(pinning.client)} (h2load too); nginx's master and worker on CPU "
            f"{_cpus(pinning.server)}.\n"
            if pinning
            else "one process, not pinned.\n"
        )
    )
    sections.publish(body, verdicts, output, SECTION_PINNED if pinning else SECTION)
    return 0


if __name__ == "__main__":
    run_main(main, "bench.llm_scale", "nginx and the client are")
