"""Soak: HighUser against the real Triton tiny model for a long run (default 10 minutes), recording
the worker's RSS every 10 s. Reports RSS growth after warm-up and the failure count, and writes
bench/SOAK.md. A benchmark, not a test: ``make soak`` (SOAK_ARGS="--minutes 2" for a short one)."""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from servers import children  # noqa: E402
from servers.launch import triton_server  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the growth figure")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "SOAK.md")
    args = parser.parse_args(argv)
    run_s = int(args.minutes * 60)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"==> soak: HighUser x{args.users} against Triton tiny_onnx for {run_s} s, RSS every {args.interval:g} s")
    samples: list[tuple[float, int]] = []
    with triton_server(models=["tiny_onnx"]) as server:
        proc = children.start(
            [
                str(Path(sys.executable).parent / "locust"),
                "-f",
                str(REPO_ROOT / "locustfile.py"),
                "--headless",
                "-u",
                str(args.users),
                "-r",
                str(args.users),
                "-t",
                f"{run_s}s",
                "--host",
                server.url,
                "--server",
                "triton",
                "--model-name",
                "tiny_onnx",
                "--csv",
                str(work / "soak"),
                "--only-summary",
                "HighUser",
            ],
            cwd=REPO_ROOT,
            stdout=(work / "locust.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        start = time.monotonic()
        try:
            while proc.poll() is None:
                try:
                    samples.append((time.monotonic() - start, rss_kib(proc.pid)))
                except (FileNotFoundError, RuntimeError):
                    break
                print(f"    t={samples[-1][0]:6.0f} s  RSS {samples[-1][1] / 1024:7.1f} MiB", flush=True)
                time.sleep(args.interval)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                children.kill(proc)
    with open(work / "soak_stats.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    after = [s for s in samples if s[0] >= args.warmup] or samples
    base, last, peak = after[0][1], after[-1][1], max(s[1] for s in after)
    growth = (last - base) / base * 100
    lines = [
        "# Soak results",
        "",
        f"`make soak` — HighUser x{args.users}, one process, against the reference Triton `tiny_onnx`, "
        f"{run_s} s; RSS of the Locust process sampled every {args.interval:g} s.",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {row['Request Count']} |",
        f"| failures | {row['Failure Count']} |",
        f"| requests/s | {float(row['Requests/s']):.0f} |",
        f"| RSS after {args.warmup:g} s warm-up | {base / 1024:.1f} MiB |",
        f"| RSS at the end | {last / 1024:.1f} MiB |",
        f"| RSS peak after warm-up | {peak / 1024:.1f} MiB |",
        f"| RSS growth after warm-up (goal < 5%) | {growth:+.2f}% |",
        "",
        "RSS samples (s, MiB): " + ", ".join(f"{t:.0f}: {k / 1024:.1f}" for t, k in samples),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines[7:16]))
    print(f"==> written {args.out}")
    return 0 if int(row["Failure Count"]) == 0 and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
