"""The benchmark's Markdown: a table of what each client measured (medians over the repeats), then the
comparisons between clients with their goals and the range over the repeats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.clients import Client

__all__ = ["IMAGESET_COUNT", "OPEN_RATE", "OPEN_USERS", "TENSOR_BYTES", "Ratio", "fmt", "ratios", "render"]

OPEN_USERS, OPEN_RATE = 10, 500  # the open-loop row: 5,000 req/s offered
IMAGESET_COUNT = 1000  # images in the image-set preprocessing rows
TENSOR_BYTES = 3 * 224 * 224 * 4  # one preprocessed image, FP32


Operand = tuple[str, str] | float  # (client key, Result attribute) or a constant


@dataclass(frozen=True)
class Ratio:
    """A derived number: ``a / b`` (unit "x", or "%" for a share) or ``a - b`` (unit "us", both in ms; "ms" a
    latency and "n" a count, usually minus 0.0)."""

    label: str
    a: Operand
    b: Operand
    unit: str = "x"
    goal: str | None = None
    passed: Callable[[float], bool] | None = None  # of the value of the medians
    each: Callable[[float], bool] | None = None  # of every repeat's value, when the goal says so

    def clients(self) -> list[str]:
        """The clients this compares."""
        return [op[0] for op in (self.a, self.b) if not isinstance(op, float)]

    def compute(self, get: Callable[[str, str], float | None]) -> float | None:
        """The value from ``get(key, attr)`` (the medians, or one repeat's results)."""
        a, b = (op if isinstance(op, float) else get(*op) for op in (self.a, self.b))
        if a is None or b is None:
            return None
        if self.unit in ("us", "ms", "n"):
            return a - b
        return a / b if b else None


def ratios() -> list[Ratio]:
    """The goals of the issue, in order, plus numbers for orientation (no goal)."""
    rate, p50, cpu = "rate", "p50_ms", "cpu_us"
    return [
        Ratio("ours 10 users / wrk 10 connections (req/s)", ("ours10", rate), ("wrk10", rate), "x",
              ">= 0.9, every repeat >= 0.8", lambda v: v >= 0.9, lambda v: v >= 0.8),
        Ratio("ours 10 users / wrk 10 connections: CPU per request", ("ours10", cpu), ("wrk10", cpu), "x", "<= 1.2",
              lambda v: v <= 1.2),
        Ratio("ours 10 users / perf_analyzer concurrency 10 on Triton: CPU per request", ("tri_ours10", cpu),
              ("pa10", cpu), "x", "< 1", lambda v: v < 1),
        Ratio("ours 10 users / perf_analyzer concurrency 10 on Triton (req/s)", ("tri_ours10", rate),
              ("pa10", rate)),
        Ratio("gRPC: ours 10 users / perf_analyzer -i grpc concurrency 10 on Triton (req/s)", ("tri_grpc10", rate),
              ("pa10_grpc", rate), "x", ">= 1.0", lambda v: v >= 1.0),
        Ratio("gRPC: ours 10 users / perf_analyzer -i grpc concurrency 10 on Triton: CPU per request",
              ("tri_grpc10", cpu), ("pa10_grpc", cpu), "x", "<= 0.8", lambda v: v <= 0.8),
        Ratio("gRPC: ours 10 users / h2load 1 connection x 10 streams (req/s)", ("grpc10", rate),
              ("h2load_1x10", rate), "x", ">= 0.9, every repeat >= 0.8", lambda v: v >= 0.9, lambda v: v >= 0.8),
        Ratio("gRPC: ours 10 users / h2load 10 connections x 1 stream (req/s)", ("grpc10", rate),
              ("h2load_10x1", rate), "x", ">= 0.9, every repeat >= 0.8", lambda v: v >= 0.9, lambda v: v >= 0.8),
        Ratio("gRPC: ours 10 users / h2load 1 connection x 10 streams: CPU per request", ("grpc10", cpu),
              ("h2load_1x10", cpu)),
        Ratio("gRPC: ours 10 users / h2load 10 connections x 1 stream: CPU per request", ("grpc10", cpu),
              ("h2load_10x1", cpu)),
        Ratio(f"gRPC, 64-byte tensor: h2load 1 connection x 10 streams / the {OPEN_USERS * OPEN_RATE:,} req/s "
              "offered below (the server's headroom)", ("h2load_small_1x10", rate), float(OPEN_USERS * OPEN_RATE)),
        Ratio(f"gRPC open loop, 64-byte tensor, {OPEN_USERS} users x {OPEN_RATE} req/s: achieved / offered (req/s)",
              ("grpc_open10_small", "achieved_rate"), ("grpc_open10_small", "offered_rate"), "x", ">= 0.99",
              lambda v: v >= 0.99),
        Ratio(f"gRPC open loop, 64-byte tensor, {OPEN_USERS} users x {OPEN_RATE} req/s: schedule lag p99",
              ("grpc_open10_small", "lag_p99_ms"), 0.0, "ms", "<= 1 ms", lambda v: v <= 1.0),
        Ratio(f"gRPC open loop, 64-byte tensor, {OPEN_USERS} users x {OPEN_RATE} req/s: dropped requests",
              ("grpc_open10_small", "dropped"), 0.0, "n"),
        Ratio(f"gRPC open loop, 602 KB image (no goal: the server's bound), {OPEN_USERS} users x {OPEN_RATE} req/s: "
              "achieved / offered (req/s)", ("grpc_open10", "achieved_rate"), ("grpc_open10", "offered_rate")),
        Ratio("gRPC open loop, 602 KB image (no goal): schedule lag p99", ("grpc_open10", "lag_p99_ms"), 0.0, "ms"),
        Ratio("gRPC: ours 10 users, --grpc-connections 2 / 4 (the default) (req/s)", ("grpc10_c2", rate),
              ("grpc10", rate)),
        Ratio("gRPC: ours 10 users, --grpc-connections 1 / 4 (the default) (req/s)", ("grpc10_c1", rate),
              ("grpc10", rate)),
        Ratio("gRPC: ours 10 users, --grpc-connections 2 / 4 (the default): CPU per request", ("grpc10_c2", cpu),
              ("grpc10", cpu)),
        Ratio("gRPC: ours 10 users, --grpc-connections 1 / 4 (the default): CPU per request", ("grpc10_c1", cpu),
              ("grpc10", cpu)),
        Ratio("null servers: ours 10 users, gRPC / HTTP (req/s)", ("grpc10", rate), ("ours10", rate)),
        Ratio("null servers: ours 10 users, gRPC / HTTP: CPU per request", ("grpc10", cpu), ("ours10", cpu)),
        Ratio("Triton, tiny_onnx: ours 10 users, gRPC / HTTP (req/s)", ("tri_grpc10", rate), ("tri_ours10", rate)),
        Ratio("Triton, tiny_onnx: ours 10 users, gRPC / HTTP: CPU per request", ("tri_grpc10", cpu),
              ("tri_ours10", cpu)),
        Ratio("Triton, tiny_onnx: ours 10 users, gRPC p50 - HTTP p50", ("tri_grpc10", p50), ("tri_ours10", p50),
              "us"),
        Ratio("Triton, tiny_onnx: ours 10 users, --grpc-connections 2 / 4 (the default) (req/s)",
              ("tri_grpc10_c2", rate), ("tri_grpc10", rate)),
        Ratio("Triton, tiny_onnx: ours 10 users, --grpc-connections 1 / 4 (the default) (req/s)",
              ("tri_grpc10_c1", rate), ("tri_grpc10", rate)),
        Ratio("Triton, tiny_onnx: perf_analyzer, gRPC / HTTP (req/s)", ("pa10_grpc", rate), ("pa10", rate)),
        Ratio("Triton, tiny_onnx: perf_analyzer, gRPC / HTTP: CPU per request", ("pa10_grpc", cpu), ("pa10", cpu)),
        Ratio("ours 10 users / FastHttpUser 10 users (req/s)", ("ours10", rate), ("fast10", rate), "x", ">= 2",
              lambda v: v >= 2),
        Ratio("ours 1 user p50 - wrk 1 connection p50 (ours timed in Rust, without Locust)", ("direct1", p50),
              ("wrk1", p50), "us", "<= 50 us", lambda v: v <= 0.050),
        Ratio("ours 1 user p50 - wrk 1 connection p50 (ours in Locust, exact response_time)", ("ours1", p50),
              ("wrk1", p50), "us", "<= 50 us", lambda v: v <= 0.050),
        Ratio("LitServe JSON: ours 1 user / seed 1 thread (req/s)", ("ours_json", rate), ("seed_json", rate), "x",
              ">= 100", lambda v: v >= 100),
        Ratio("preprocessing img1.jpg: Pillow+numpy time / ours time (per image, p50)", ("pre_pillow_img1", p50),
              ("pre_ours_img1", p50), "x", ">= 3", lambda v: v >= 3),
        Ratio("preprocessing 4000x3000: Pillow+numpy time / ours time (per image, p50)", ("pre_pillow_big", p50),
              ("pre_ours_big", p50), "x", ">= 3", lambda v: v >= 3),
        Ratio(f"preprocessing {IMAGESET_COUNT} images: ours / Pillow+numpy (images/s)", ("imageset_ours", rate),
              ("imageset_pillow", rate), "x", ">= 4", lambda v: v >= 4),
        Ratio(f"preprocessing {IMAGESET_COUNT} images: memory per image / tensor size ({TENSOR_BYTES:,} bytes)",
              ("imageset_ours", "bytes_per_image"), float(TENSOR_BYTES), "x", "<= 1.05", lambda v: v <= 1.05),
        Ratio(f"open loop, {OPEN_USERS} users x {OPEN_RATE} req/s: achieved / offered (req/s)",
              ("open10", "achieved_rate"), ("open10", "offered_rate"), "x", ">= 0.99", lambda v: v >= 0.99),
        Ratio(f"open loop, {OPEN_USERS} users x {OPEN_RATE} req/s: dropped requests", ("open10", "dropped"), 0.0, "n",
              "0", lambda v: v == 0),
        Ratio(f"open loop, {OPEN_USERS} users x {OPEN_RATE} req/s: schedule lag p99", ("open10", "lag_p99_ms"), 0.0,
              "ms", "<= 1 ms", lambda v: v <= 1.0),
        Ratio("20 ms server, 50 users: achieved / ideal (50 x 50 req/s)", ("slow50", rate), 2500.0, "x",
              "every repeat >= 0.95", lambda v: v >= 0.95, lambda v: v >= 0.95),
        Ratio("20 ms server, wrk 50 connections: achieved / ideal (50 x 50 req/s)", ("wrk_slow50", rate), 2500.0),
        Ratio("20 ms server, 50 users: ours / wrk 50 connections (req/s)", ("slow50", rate), ("wrk_slow50", rate)),
        Ratio("20 ms server, 50 users: share of the time each user has a request in flight "
              "(rate x mean latency / 50)", ("slow50", "busy"), 1.0, "%"),
        Ratio("20 ms server, wrk 50 connections: the same for wrk", ("wrk_slow50", "busy"), 1.0, "%"),
        Ratio("20 ms server, 10 users: achieved / ideal (10 x 50 req/s)", ("slow10", rate), 500.0),
        Ratio("20 ms server, 1 user: achieved / ideal (50 req/s)", ("slow1", rate), 50.0),
        Ratio("ours 1 user / wrk 1 connection (req/s)", ("ours1", rate), ("wrk1", rate)),
        Ratio("ours 10 users / seed 1 thread (req/s)", ("ours10", rate), ("seed", rate)),
        Ratio("ours 10 users / HttpUser 10 users (req/s)", ("ours10", rate), ("http10", rate)),
        Ratio("ours 10 users, Python's thread SCHED_BATCH (default) / normal policy (req/s)", ("ours10", rate),
              ("ours10_normal", rate)),
        Ratio("ours 10 users, Python's thread SCHED_BATCH (default) / normal policy (CPU per request)",
              ("ours10", cpu), ("ours10_normal", cpu)),
        Ratio("open loop: schedule lag p99, Python's thread SCHED_BATCH (default) - normal policy",
              ("open10", "lag_p99_ms"), ("open10_normal", "lag_p99_ms"), "us"),
        Ratio("ours 10 users, 2 I/O threads / wrk 10 connections (req/s)", ("ours10_io2", rate), ("wrk10", rate)),
        Ratio("ours 10 users, 2 I/O threads / ours 10 users, default 1 (req/s)", ("ours10_io2", rate),
              ("ours10", rate)),
    ]  # fmt: skip


def fmt(value: float | None, unit: str) -> str:
    """``value`` for the tables: "us" a difference of ms values, "ms" a latency, "%" a share, else a number."""
    if value is None:
        text = "—"
    elif unit == "us":
        text = f"{value * 1000:+.0f} us"
    elif unit == "%":
        text = f"{value:.0%}"
    elif unit == "ms":
        text = f"{value * 1000:.0f} us" if value < 1 else f"{value:.2f} ms"
    elif unit == "n":
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return text


def _cpu(c: Client) -> str:
    """CPU µs per request: the process's, and our I/O threads' where there are any."""
    process, io = c.median("cpu_us"), c.median("io_cpu_us")
    if process is None:
        return "—"
    return f"{process:.0f} us" + (f" / {io:.0f} us" if io is not None else "")


def _wakes(c: Client) -> str:
    """Wake-ups per request (all threads / main thread / our I/O threads) and, for ours, crossings between
    Python's thread and the I/O thread (to it / back)."""
    wakes = c.median("wakes")
    if wakes is None:
        return "—"
    text = f"{wakes:.2f} / {c.median('main_wakes') or 0:.2f}"
    if (io := c.median("io_wakes")) is not None:
        text += f" / {io:.2f}"
    if (to_io := c.median("to_io")) is not None:
        text += f"; {to_io:.2f} / {c.median('to_python') or 0:.2f}"
    return text


def render(
    rows: list[Client], lookup: list[Client], repeats: int, *, goals: bool = True
) -> tuple[str, list[tuple[str, bool | None]]]:
    """The Markdown tables of ``rows`` and their comparisons (operands looked up in ``lookup`` too) and the
    verdicts [(goal label, passed or None when not measured)]; with ``goals=False`` the goals are shown for
    orientation and no verdict is given."""
    by_key = {c.key: c for c in [*lookup, *rows]}
    lines = [
        "| group | client | rate (median) | p50 latency | mean latency | Locust CSV 50% | CPU per request "
        "(process / I/O threads) | wake-ups per request (all / main / I/O threads); crossings (to I/O / back) | "
        "per repeat (rate) | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in rows:
        rate = c.median("rate")
        per = ", ".join(fmt(r.rate, "") if r.error is None else "err" for r in c.results)
        csv50 = c.median("csv_p50_ms")
        notes = "; ".join(sorted({r.error for r in c.results if r.error}))
        if (offered := c.median("offered_rate")) is not None:
            open_loop = (
                f"offered {fmt(offered, '')}, achieved {fmt(c.median('achieved_rate'), '')} req/s, dropped "
                f"{fmt(c.median('dropped'), 'n')}, unfinished {fmt(c.median('unfinished'), 'n')}, lag p99 "
                f"{fmt(c.median('lag_p99_ms'), 'ms')}, service time p99 {fmt(c.median('service_p99_ms'), 'ms')}"
            )
            notes = f"{open_loop}; {notes}" if notes else open_loop
        lines.append(
            f"| {c.group} | {c.label} | {fmt(rate, '')} {c.unit} | {fmt(c.median('p50_ms'), 'ms')} | "
            f"{fmt(c.median('mean_ms'), 'ms')} | "
            f"{'—' if csv50 is None else f'{csv50:.0f} ms'} | {_cpu(c)} | {_wakes(c)} | {per} | "
            f"{notes.replace('|', '/')[:300]} |"
        )

    def median_get(key: str, attr: str) -> float | None:
        return by_key[key].median(attr) if key in by_key else None

    lines += ["", "| comparison | value (of medians) | per-repeat range | goal | result |", "|---|---:|---:|---|---|"]
    verdicts: list[tuple[str, bool | None]] = []
    for ratio in ratios():
        if not any(c.key in ratio.clients() for c in rows):
            continue  # a comparison of clients this table does not show
        if not all(key in by_key for key in ratio.clients()):
            continue  # a client this run did not measure at all (a run with --only)
        value = ratio.compute(median_get)
        per_repeat = []
        for i in range(repeats):

            def get(key: str, attr: str, i: int = i) -> float | None:
                results = by_key[key].results if key in by_key else []
                if i >= len(results) or results[i].error is not None:
                    return None
                return getattr(results[i], attr)

            v = ratio.compute(get)
            if v is not None:
                per_repeat.append(v)
        span = f"{fmt(min(per_repeat), ratio.unit)} … {fmt(max(per_repeat), ratio.unit)}" if per_repeat else "—"
        verdict = ""
        if ratio.goal is not None and ratio.passed is not None:
            ok = None if value is None else ratio.passed(value)
            if ok and ratio.each is not None:
                ok = len(per_repeat) == repeats and all(ratio.each(v) for v in per_repeat)
            if goals:
                verdicts.append((ratio.label, ok))
                verdict = "not measured" if ok is None else ("**met**" if ok else "**missed**")
            else:
                verdict = "(no verdict: unpinned)"
        shown = fmt(value, ratio.unit) + ("x" if ratio.unit == "x" and value is not None else "")
        lines.append(f"| {ratio.label} | {shown} | {span} | {ratio.goal or ''} | {verdict} |")
    return "\n".join(lines), verdicts
