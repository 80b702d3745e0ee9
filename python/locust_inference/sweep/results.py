"""A sweep's results: ``sweep.json`` (everything), ``sweep.csv`` (one row per step; with several models, the
step's total and then one row per model) and the summary printed at the end."""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from locust_inference.options import Settings
from locust_inference.sweep.plan import SweepPlan

__all__ = ["describe_row", "document", "format_summary", "write"]

CSV_COLUMNS = (
    "step",
    # the request name; with several models, "all" on the step's total row, then one row per model
    "name",
    "load",
    "users",
    "offered_rate_per_s",
    "achieved_per_s",
    "requests",
    "failures",
    "dropped",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p99.9_ms",
    "service_p50_ms",
    "service_p99_ms",
    "windows",
    "stable",
    "server_queue_ms",
    "server_compute_infer_ms",
    "server_avg_batch_size",
    # generative steps (empty otherwise)
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "tpot_p50_ms",
    "output_tokens_per_s",
    "token_goodput_per_s",
    "gpu_utilization_pct",
    "gpu_power_w",
    "gpu_memory_used_peak_bytes",
    "cpu_utilization_pct",
    "cpu_memory_used_peak_bytes",
    "server_process_cpu_pct",
    "server_process_rss_peak_bytes",
    "client_python_cpu_peak_pct",
)
# the columns from a step's server_metrics (telemetry's Monitor.step), by the same names
METRICS_COLUMNS = CSV_COLUMNS[CSV_COLUMNS.index("gpu_utilization_pct") :]


def document(
    settings: Settings,
    *,
    plan: SweepPlan,
    rows: list[dict[str, Any]],
    stopped: str | None,
    goodput: dict[str, Any] | None,
    ended: float,
    deployment: str | None = None,
    model_goodput: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    settings_doc = asdict(plan)
    for key in ("slo", "stop_latency"):
        limit = getattr(plan, key)
        settings_doc[key] = None if limit is None else str(limit)
    return {
        "version": 1,
        "server": settings.server,
        "model": settings.model,
        "host": settings.host,
        "ended": dt.datetime.fromtimestamp(ended, dt.UTC).isoformat(timespec="seconds"),
        "mode": plan.mode,
        "plan": settings_doc,
        "deployment": deployment,
        "steps": rows,
        "stopped": stopped,
        "goodput": goodput,
        # several models: each one's goodput, from its own rows of the steps (``steps[].models``)
        "model_goodput": model_goodput,
    }


def _csv_rows(row: dict[str, Any], name: str) -> list[list[Any]]:
    """A step's rows: its total, then (several models) each model's, with the step's load, windows and
    stability."""
    models = row.get("models")
    if not models:
        return [_csv_row(row, name)]
    shared = {k: row[k] for k in ("step", "load", "windows", "stable")}
    return [
        _csv_row(row, "all"),
        *(_csv_row({**m, **shared, "tokens": None, "server_metrics": None}, name) for name, m in models.items()),
    ]


def _csv_row(row: dict[str, Any], name: str) -> list[Any]:
    lat, service, server = row["latency_ms"], row["service_ms"], row.get("server") or {}
    values: dict[str, Any] = {
        "name": name,
        **{k: row[k] for k in ("step", "load", "users", "offered_rate_per_s", "requests", "failures", "dropped")},
        "achieved_per_s": f"{row['achieved_per_s']:.3f}",
        **{f"{k}_ms": f"{lat[k]:.3f}" if k in lat else "" for k in ("p50", "p90", "p99", "p99.9")},
        "service_p50_ms": f"{service['p50']:.3f}" if "p50" in service else "",
        "service_p99_ms": f"{service['p99']:.3f}" if "p99" in service else "",
        "windows": row["windows"],
        "stable": str(row["stable"]).lower(),
        "server_queue_ms": server.get("queue_ms", ""),
        "server_compute_infer_ms": server.get("compute_infer_ms", ""),
        "server_avg_batch_size": server.get("avg_batch_size", ""),
        **_token_columns(row.get("tokens")),
        **{c: (row.get("server_metrics") or {}).get(c) for c in METRICS_COLUMNS},
    }
    return ["" if values[c] is None else values[c] for c in CSV_COLUMNS]


def _token_columns(tokens: dict[str, Any] | None) -> dict[str, Any]:
    t = tokens or {}

    def ms(measure: str, key: str) -> str:
        values = t.get(measure) or {}
        return f"{values[key]:.3f}" if key in values else ""

    goodput = t.get("goodput_per_s")
    return {
        "ttft_p50_ms": ms("ttft_ms", "p50"),
        "ttft_p99_ms": ms("ttft_ms", "p99"),
        "itl_p50_ms": ms("itl_ms", "p50"),
        "tpot_p50_ms": ms("tpot_ms", "p50"),
        "output_tokens_per_s": f"{t['output_tokens_per_s']:.3f}" if tokens else "",
        "token_goodput_per_s": f"{goodput:.3f}" if goodput is not None else "",
    }


def write(doc: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / "sweep.json", folder / "sweep.csv"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        name = f"{doc['server']}/{doc['model']}"
        for row in doc["steps"]:
            writer.writerows(_csv_rows(row, name))
    return json_path, csv_path


def describe_row(row: dict[str, Any]) -> str:
    lat = row["latency_ms"]
    offered = "" if row["offered_rate_per_s"] is None else f"offered {row['offered_rate_per_s']:g}/s, "
    dropped = "" if row["dropped"] is None else f", dropped {row['dropped']}"
    models = "".join(
        f"; {name} {m['achieved_per_s']:.1f} req/s, p99 {m['latency_ms'].get('p99', 0):.1f} ms,"
        f" failures {m['failures']}"
        for name, m in (row.get("models") or {}).items()
    )
    return (
        f"{offered}{row['achieved_per_s']:.1f} req/s, p50 {lat.get('p50', 0):.1f} ms, p99 {lat.get('p99', 0):.1f} ms,"
        f" failures {row['failures']}{dropped}, {row['windows']} windows, {'stable' if row['stable'] else 'UNSTABLE'}"
        f"{models}"
    )


def _format_models(doc: dict[str, Any]) -> list[str]:
    """Several models: each model's part of each step (its users, rate, latencies, Triton's batch and queue)
    and its goodput."""
    steps = doc["steps"]
    if not any(row.get("models") for row in steps):
        return []
    width = max(len(name) for row in steps for name in row.get("models") or {})
    lines = [
        "",
        "Per model (the step's stability is judged on its total):",
        f"{'step':>4} {'name':<{width}} {'users':>5} {'achieved/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'failures':>8}"
        f" {'dropped':>7} {'batch':>5} {'queue ms':>8}  within SLO",
    ]
    verdict = {True: "yes", False: "NO", None: "-"}
    for row in steps:
        for name, m in (row.get("models") or {}).items():
            lat, server = m["latency_ms"], m.get("server") or {}
            batch, queue = server.get("avg_batch_size"), server.get("queue_ms")
            lines.append(
                f"{row['step']:>4} {name:<{width}} {m['users']:>5} {m['achieved_per_s']:>10.1f}"
                f" {lat.get('p50', 0):>9.1f} {lat.get('p99', 0):>9.1f} {m['failures']:>8}"
                f" {'-' if m['dropped'] is None else m['dropped']:>7} {'-' if batch is None else f'{batch:.2f}':>5}"
                f" {'-' if queue is None else f'{queue:.2f}':>8}  {verdict[m['within_slo']]}"
            )
    for name, good in (doc.get("model_goodput") or {}).items():
        rate = "none" if good["rate_per_s"] is None else f"{good['rate_per_s']:.1f} req/s"
        lines.append(f"Goodput of {name} at {good['slo']}: {rate}, {good['how']}")
    return lines


def _format_tokens(steps: list[dict[str, Any]]) -> list[str]:
    """The token table of a generative sweep: TTFT, ITL and TPOT per step, output tokens/s and the goodput."""
    if not any(row.get("tokens") for row in steps):
        return []
    lines = [
        "",
        "Tokens per step (ms; goodput: requests per second that met every --token-slo objective):",
        f"{'step':>4} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8} {'TPOT p50':>9} {'tokens/s':>9}"
        f" {'goodput/s':>9}",
    ]
    for row in steps:
        t = row.get("tokens") or {}
        cols = _token_columns(t)
        goodput = cols["token_goodput_per_s"] or "-"
        itl99 = f"{t['itl_ms']['p99']:.3f}" if "p99" in (t.get("itl_ms") or {}) else ""
        lines.append(
            f"{row['step']:>4} {cols['ttft_p50_ms'] or '-':>9} {cols['ttft_p99_ms'] or '-':>9}"
            f" {cols['itl_p50_ms'] or '-':>8} {itl99 or '-':>8} {cols['tpot_p50_ms'] or '-':>9}"
            f" {cols['output_tokens_per_s'] or '-':>9} {goodput:>9}"
        )
    return lines


def format_summary(doc: dict[str, Any]) -> str:
    unit = "users" if doc["mode"] == "concurrency" else "req/s"
    lines = ["", f"Sweep of {doc['server']}/{doc['model']} ({doc['mode']} steps):", ""]
    if doc.get("deployment"):
        lines[-1:-1] = [f"deployment: {doc['deployment']}"]
    lines.append(
        f"{'step':>4} {unit:>7} {'achieved/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9}"
        f" {'failures':>8} {'dropped':>7} {'batch':>5} {'windows':>7}  stable"
    )
    for row in doc["steps"]:
        lat, server = row["latency_ms"], row.get("server") or {}
        batch = server.get("avg_batch_size")
        lines.append(
            f"{row['step']:>4} {row['load']:>7g} {row['achieved_per_s']:>10.1f}"
            + "".join(f" {lat.get(k, 0):>9.1f}" for k in ("p50", "p90", "p99", "p99.9"))
            + f" {row['failures']:>8} {'-' if row['dropped'] is None else row['dropped']:>7}"
            + f" {'-' if batch is None else f'{batch:.2f}':>5} {row['windows']:>7}  {'yes' if row['stable'] else 'NO'}"
        )
    lines += _format_models(doc)
    lines += _format_tokens(doc["steps"])
    saturated = [
        f"{row['step']} ({', '.join(metrics['client_saturated'])})"
        for row in doc["steps"]
        if (metrics := row.get("server_metrics")) and metrics.get("client_saturated")
    ]
    if saturated:
        lines += [
            "",
            "WARNING: load generator saturated (Python's thread at >= 90% of a core) in step "
            + "; ".join(saturated)
            + ": those steps' numbers are suspect (add workers)",
        ]
    gpu = [row for row in doc["steps"] if (row.get("server_metrics") or {}).get("gpu_utilization_pct") is not None]
    cpu = [row for row in doc["steps"] if (row.get("server_metrics") or {}).get("cpu_utilization_pct") is not None]
    if gpu or cpu:
        key, label = ("gpu_utilization_pct", "GPU") if gpu else ("cpu_utilization_pct", "server CPU")
        lines += [
            "",
            f"{label} utilisation per step (%): "
            + ", ".join(f"{row['step']}: {row['server_metrics'][key]:.0f}" for row in (gpu or cpu)),
        ]
    if doc["stopped"]:
        lines += ["", doc["stopped"]]
    good = doc.get("goodput")
    if good:
        if good["rate_per_s"] is None:
            lines += ["", f"Goodput at {good['slo']}: none, {good['how']}"]
        else:
            lines += ["", f"Goodput at {good['slo']}: {good['rate_per_s']:.1f} req/s, {good['how']}"]
    return "\n".join(lines)
