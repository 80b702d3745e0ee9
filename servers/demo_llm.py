"""``make demo-llm``: two generative models behind LitServe's ``OpenAISpec`` and behind Triton's
``generate_stream``, the same prompts and users against each, and per model a table of time to first token,
inter-token latency and output tokens per second.

* ``synthetic_llm``: the synthetic generator (servers/generator.py), alike on both servers: 50 ms to the
  first token, then 10 ms a token, at most 64 tokens;
* ``tiny_gpt``: the small real language model (servers/tiny_gpt.py): ONNX Runtime on CPU, a prefill over
  the prompt and one decoder step a token.

Each run asks for 64 tokens, with ``locust --headless`` and ``HighUser`` (the next request as soon as the
previous one returned), ``DEMO_USERS`` users (default 4) for ``DEMO_RUN_TIME`` (default ``15s``).
``DEMO_LLM_MODELS`` (default ``synthetic_llm,tiny_gpt``) picks the models. Results go to
``<DEMO_RESULTS or results>/llm/<model>/<server>/`` (``latency.json``, Locust's CSV and log), and each
model's side-by-side report to ``<DEMO_RESULTS or results>/llm/<model>/compare.html`` and ``compare.md``.

Exit status: 0 when both runs completed requests without failures, 1 otherwise, 2 on bad usage, 130 when
interrupted. Servers are stopped on every path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from locust_inference.results_schema import LATENCY_FILE

from servers import children
from servers.launch import REPO_ROOT, litserve_llm_server, triton_server

MODELS = ("synthetic_llm", "tiny_gpt")
GENERATOR = ["--prefill-ms", "50", "--token-ms", "10", "--max-tokens", "64"]
LITSERVE_MODEL = {"synthetic_llm": "synthetic", "tiny_gpt": "tiny_gpt"}  # servers.litserve_llm --model
ABOUT = {
    "synthetic_llm": "synthetic generator (50 ms to the first token, 10 ms a token, 64 tokens)",
    "tiny_gpt": "tiny_gpt (a 6-layer decoder on ONNX Runtime, CPU, 64 tokens)",
}
RUNS = {  # server -> (--server, --api)
    "litserve": ("litserve", "chat"),
    "triton": ("triton", "generate"),
}
LOCUST = str(Path(sys.executable).parent / "locust")
_RUN_TIME = re.compile(r"^(?:\d+h)?(?:\d+m)?(?:\d+s)?$")


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(model: str, server: str, url: str, folder: Path, *, users: int, run_time: str) -> dict[str, Any] | None:
    """One Locust run against ``url``; latency.json's entry for the model, None when there is none."""
    kind, api = RUNS[server]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "-u", str(users), "-r", str(users)]
    cmd += ["-t", run_time, "--host", url, "--csv", str(folder / "llm"), "--api", api, "--max-tokens", "64"]
    cmd += ["HighUser"]
    env = children.clean_env(SERVER=kind, MODEL_NAME=model)
    print(f"==> {model} on {server}: {' '.join(cmd[1:])}", flush=True)
    with open(folder / "llm.log", "wb") as log:
        proc = children.start(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait()
        finally:
            children.kill(proc)
    try:
        document = json.loads((folder / LATENCY_FILE).read_text())
        entry: dict[str, Any] = document["requests"][f"{kind}/{model}"]
    except (OSError, ValueError, KeyError):
        return None
    return entry


def table(entries: dict[str, dict[str, Any] | None]) -> str:
    """One row per server: requests, failures, TTFT and ITL p50/p99, TPOT p50, output tokens/s."""
    head = (
        f"{'server':<10} {'requests':>8} {'failed':>6} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} "
        f"{'ITL p99':>8} {'TPOT p50':>9} {'tokens/s':>9} {'per user':>9}  counted by"
    )
    lines = [head, "-" * len(head)]
    for server, entry in entries.items():
        if entry is None or not entry.get("tokens"):
            lines.append(f"{server:<10} no results (see its llm.log)")
            continue
        t = entry["tokens"]

        def ms(values: dict[str, float], key: str) -> str:
            return f"{values[key]:.2f}" if key in values else "-"

        per_user = t["output_tokens_per_s_per_user"]
        lines.append(
            f"{server:<10} {entry['count']:>8} {entry['failures'] or 0:>6} {ms(t['ttft_ms'], 'p50'):>9} "
            f"{ms(t['ttft_ms'], 'p99'):>9} {ms(t['itl_ms'], 'p50'):>8} {ms(t['itl_ms'], 'p99'):>8} "
            f"{ms(t['tpot_ms'], 'p50'):>9} {t['output_tokens_per_s']:>9.1f} "
            f"{(f'{per_user:.1f}' if per_user is not None else '-'):>9}  "
            + ("chunks (approximate)" if t["approximate"] else "usage")
        )
    return "\n".join(lines)


def compare_report(folders: list[Path], out: Path) -> None:
    """Writes ``out/compare.html`` and ``compare.md`` (what ``make compare`` does, with the token table); a
    failure is only reported."""
    from locust_inference.report import ReportError, build_report

    try:
        html_path, md_path = build_report(folders, out)
    except (ReportError, OSError) as err:
        print(f"(no side-by-side report: {err})")
        return
    print(f"Side-by-side report (token table, latency distributions): {html_path}, {md_path}")


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    run_time = os.environ.get("DEMO_RUN_TIME", "15s").strip() or "15s"
    users_text = os.environ.get("DEMO_USERS", "4").strip()
    if not _RUN_TIME.fullmatch(run_time) or not re.search(r"\d", run_time):
        print(f"demo-llm: DEMO_RUN_TIME must be like 15s, 2m or 1m30s, not {run_time[:40]!r}", file=sys.stderr)
        return 2
    if not users_text.isdigit() or not 1 <= int(users_text) <= 1000:
        print(f"demo-llm: DEMO_USERS must be a whole number from 1 to 1000, not {users_text[:40]!r}", file=sys.stderr)
        return 2
    users = int(users_text)
    models = [m.strip() for m in os.environ.get("DEMO_LLM_MODELS", ",".join(MODELS)).split(",") if m.strip()]
    if not models or set(models) - set(MODELS):
        print(f"demo-llm: DEMO_LLM_MODELS must name some of {', '.join(MODELS)}", file=sys.stderr)
        return 2
    root = Path(os.environ.get("DEMO_RESULTS", "results")) / "llm"
    entries: dict[str, dict[str, dict[str, Any] | None]] = {model: {} for model in models}
    try:
        with contextlib.ExitStack() as stack:
            print(f"==> starting LitServe (OpenAISpec) and Triton (generate_stream), serving {', '.join(models)}")
            triton = stack.enter_context(triton_server(models=models, extra_args=GENERATOR))
            for model in models:
                args = ["--model", LITSERVE_MODEL[model], *GENERATOR]
                with litserve_llm_server(extra_args=args) as litserve:
                    for server, running in (("litserve", litserve), ("triton", triton)):
                        folder = root / model / server
                        entries[model][server] = run(model, server, running.url, folder, users=users, run_time=run_time)
            print("==> stopping the servers", flush=True)
    except KeyboardInterrupt:
        print("\ndemo-llm: interrupted; the servers and load generators were stopped", file=sys.stderr)
        return 130
    for model in models:
        print()
        print(f"{ABOUT[model]}, {users} users, {run_time} each:")
        print()
        print(table(entries[model]))
    print()
    print("ms; TTFT: from the send to the first token; ITL: between tokens; TPOT: a request's mean gap after its")
    print("first token; tokens/s: output tokens of successful requests over the run. Triton's generate extension")
    print("sends no usage, so its tokens are counted as chunks (one token each here). See docs/generative.md.")
    print(f"Results: {root}/<model>/<server>/latency.json")
    for model in models:
        compare_report([root / model / s for s, entry in entries[model].items() if entry is not None], root / model)
    bad = [(m, s) for m in models for s, e in entries[m].items() if e is None or not e["count"] or e.get("failures")]
    for model, server in bad:
        log = root / model / server / "llm.log"
        print(f"demo-llm: the {model} run on {server} failed (see {log})", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
