"""``make sweep``: both reference servers deployed alike, the same load sweep against each, one comparison.

Triton and LitServe serve the model with the same onnxruntime threads and the same server-side batching
(batches of up to ``SWEEP_BATCH``, waiting up to ``SWEEP_BATCH_DELAY_US`` to fill), one model instance each,
on the same CPU. The sweep (``sweepfile.py``) steps through ``SWEEP_CONCURRENCY`` users (or ``SWEEP_RATE``
req/s) and judges goodput by ``SWEEP_SLO``. Each server's results go to ``results/sweep/<server>/``
(``sweep.json``, ``sweep.csv``, ``latency.json``, Locust's CSV files, the whole output in ``sweep.log``);
the comparison, with both latency-throughput curves, to ``results/sweep/compare.html`` and ``compare.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from locust_inference.report import ReportError, build_report

from servers import children
from servers.launch import REPO_ROOT, RunningServer, litserve_server, triton_server

SERVERS = ("triton", "litserve")
DEFAULTS = {
    "SWEEP_MODEL": "resnet50_onnx",
    "SWEEP_CONCURRENCY": "1,2,4,8",
    "SWEEP_SLO": "p99=1s",
    "SWEEP_WINDOW": "5",
    "SWEEP_WARMUP": "5",
    "SWEEP_STABLE_WINDOWS": "3",
    "SWEEP_MAX_WINDOWS": "10",
    "SWEEP_BATCH": "16",
    "SWEEP_BATCH_DELAY_US": "1000",
    "SWEEP_THREADS": "2",
    "SWEEP_RESULTS": "results/sweep",
}


def setting(name: str) -> str:
    return os.environ.get(name, "").strip() or DEFAULTS[name]


def relative(path: Path) -> Path:
    """``path`` as seen from the repository when it is inside it."""
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def say(text: str = "") -> None:
    print(text, flush=True)


def deployment(batch: int, delay_us: int, threads: int) -> str:
    return (
        f"one model instance on CPU, onnxruntime {threads} threads, server-side batching of up to {batch}"
        f" requests waiting up to {delay_us} µs"
    )


def start(stack: contextlib.ExitStack, model: str, batch: int, delay_us: int, threads: int) -> dict[str, RunningServer]:
    say("==> starting Triton and LitServe, deployed alike: " + deployment(batch, delay_us, threads))
    triton = stack.enter_context(
        triton_server(
            models=[model],
            threads=threads,
            extra_args=["--max-batch-size", str(batch), "--max-queue-delay-us", str(delay_us)],
        )
    )
    litserve = stack.enter_context(
        litserve_server(
            model=model,
            threads=threads,
            extra_args=["--max-batch-size", str(batch), "--batch-timeout", str(delay_us / 1e6)],
        )
    )
    return {"triton": triton, "litserve": litserve}


def sweep_args() -> list[str]:
    rate = os.environ.get("SWEEP_RATE", "").strip()
    steps = ["--sweep-rate", rate] if rate else ["--sweep-concurrency", setting("SWEEP_CONCURRENCY")]
    return [
        *steps,
        "--slo",
        setting("SWEEP_SLO"),
        "--sweep-window",
        setting("SWEEP_WINDOW"),
        "--sweep-warmup",
        setting("SWEEP_WARMUP"),
        "--sweep-stable-windows",
        setting("SWEEP_STABLE_WINDOWS"),
        "--sweep-max-windows",
        setting("SWEEP_MAX_WINDOWS"),
    ]


def metrics_args(running: RunningServer) -> list[str]:
    """Where the sweep reads the server's own metrics (docs/metrics.md): Triton's endpoint on its port, LitServe's
    process (it has no endpoint; it runs here)."""
    kind = running.kind.lower()  # servers.launch names it "Triton" or "LitServe"
    if kind == "triton" and running.metrics_port is not None:
        return ["--metrics-url", f"http://{running.host}:{running.metrics_port}/metrics"]
    return ["--server-pid", str(running.pid)] if kind == "litserve" else []


def run(server: str, url: str, model: str, folder: Path, deployed: str, *, metrics: list[str] | None = None) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        if stale.is_file():
            stale.unlink()  # never report a previous sweep's numbers
    locust = str(Path(sys.executable).parent / "locust")
    cmd = [locust, "-f", "sweepfile.py", "--headless", "--host", url, "--server", server, "--model-name", model]
    cmd += [*sweep_args(), "--deployment", deployed, "--csv", str(folder / "sweep"), "--only-summary", "-t", "60m"]
    cmd += metrics or []
    shown = relative(folder)
    say(f"==> {server}: sweep of {model} at {url} (output in {shown / 'sweep.log'})")
    with (folder / "sweep.log").open("w") as log:
        proc = children.start(
            cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert proc.stdout is not None
            showing = False
            for line in proc.stdout:
                log.write(line)
                if line.startswith("Sweep of") or "locust-inference sweep: step" in line:
                    showing = line.startswith("Sweep of")
                    if not showing:
                        say("    " + line.split("locust-inference sweep: ", 1)[1].rstrip())
                if showing:
                    if line.startswith("written: ") or line.startswith("["):
                        showing = False
                    else:
                        say("    " + line.rstrip())
            return proc.wait()
        finally:
            children.stop(proc)


def main() -> int:
    model, root = setting("SWEEP_MODEL"), REPO_ROOT / setting("SWEEP_RESULTS")
    try:
        batch, delay_us, threads = (int(setting(k)) for k in ("SWEEP_BATCH", "SWEEP_BATCH_DELAY_US", "SWEEP_THREADS"))
    except ValueError as err:
        print(f"sweep: SWEEP_BATCH, SWEEP_BATCH_DELAY_US and SWEEP_THREADS are whole numbers ({err})", file=sys.stderr)
        return 2
    deployed = deployment(batch, delay_us, threads)
    started = time.monotonic()
    statuses: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as stack:
            servers = start(stack, model, batch, delay_us, threads)
            for name in SERVERS:
                statuses[name] = run(
                    name, servers[name].url, model, root / name, deployed, metrics=metrics_args(servers[name])
                )
    except KeyboardInterrupt:
        print("\nsweep: interrupted; the servers and load generators were stopped", file=sys.stderr)
        return 130
    try:
        html_path, md_path = build_report([root / name for name in SERVERS], root)
        say(f"\nComparison with both curves: {relative(html_path)}, {relative(md_path)}")
    except (ReportError, OSError) as err:
        say(f"(no comparison: {err})")
    say()
    for name in SERVERS:
        try:
            good = json.loads((root / name / "sweep.json").read_text()).get("goodput")
        except (OSError, ValueError):
            good = None
        if good is None:
            say(f"{name}: no goodput (see {root / name / 'sweep.log'})")
        elif good["rate_per_s"] is None:
            say(f"{name}: goodput at {good['slo']}: none, {good['how']}")
        else:
            say(f"{name}: goodput at {good['slo']}: {good['rate_per_s']:.1f} req/s, {good['how']}")
    say(f"Done in {time.monotonic() - started:.0f} s.")
    failed = {name: status for name, status in statuses.items() if status != 0}
    for name, status in failed.items():
        print(f"sweep: the {name} sweep exited with status {status} (see {root / name / 'sweep.log'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
