"""The comparison report (``python -m locust_inference.report``), on hand-written run folders.

The inputs follow the ``latency.json`` format the load tests write, and Locust's stats history CSV;
the end-to-end tests produce real ones. The last tests render the page in headless Chromium.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from locust_inference.report import ReportError, build_report, format_ms, load_run, main
from support.report_page import PLOTLYJS_TAG, figures, without_plotlyjs

HISTORY_HEADER = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s",
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
    "Total Request Count", "Total Failure Count", "Total Median Response Time", "Total Average Response Time",
    "Total Min Response Time", "Total Max Response Time", "Total Average Content Size",
]  # fmt: skip
STARTED = 1_795_840_800  # 2026-11-28T04:40:00Z
CHART_IDS = ["latency-distribution", "throughput-over-time", "latency-over-time"]
SWEEP_CHART_IDS = ["sweep-latency-throughput", "sweep-batch-size"]
# two real sweep.json files of make sweep (Triton, a 20 ms model)
SWEEPS = Path(__file__).parents[1] / "support" / "sweeps"
VOID_ELEMENTS = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "wbr"}


def hdr_percentiles(count: int, ticks_per_half_distance: int = 5) -> list[float]:
    """The percentiles HdrHistogram's percentile iteration reports for ``count`` values, ending at 100."""
    percentiles, p = [], 0.0
    while p < 100.0 * (1.0 - 1.0 / count):
        percentiles.append(p)
        ticks = ticks_per_half_distance * 2 ** (int(math.log2(100.0 / (100.0 - p))) + 1)
        p += 100.0 / ticks
    return [*percentiles, 100.0]


def latency_at(p: float, base: float, scale: float, peak: float) -> float:
    """An exponential-tailed latency distribution: ``base`` at p0, ``peak`` at p100."""
    return peak if p >= 100.0 else round(min(peak, base + scale * -math.log(1.0 - p / 100.0)), 3)


def write_run(
    folder: Path,
    server: str,
    *,
    base: float,
    scale: float,
    peak: float,
    rps: float,
    server_stats: dict[str, float] | None,
    history: bool = True,
) -> dict[str, Any]:
    """Writes ``folder/latency.json`` (and a 30 s stats history) for a synthetic run; returns the JSON."""
    folder.mkdir(parents=True)
    count = round(rps * 30)
    distribution = [[p, latency_at(p, base, scale, peak)] for p in hdr_percentiles(count)]
    at = {q: latency_at(q, base, scale, peak) for q in (0, 50, 90, 95, 99, 99.9, 99.99, 100)}
    mean = base + scale

    def summary(shift: float) -> dict[str, float]:
        return {
            "min": at[0] - shift,
            "mean": mean - shift,
            "p50": at[50] - shift,
            "p90": at[90] - shift,
            "p95": at[95] - shift,
            "p99": at[99] - shift,
            "p99.9": at[99.9] - shift,
            "p99.99": at[99.99] - shift,
            "max": at[100] - shift,
        }

    data = {
        "version": 1,
        "server": server,
        "model": "resnet50_onnx",
        "host": f"http://127.0.0.1:{8000 if server == 'triton' else 8001}",
        "started": "2026-11-28T04:40:00+00:00",
        "ended": "2026-11-28T04:40:30+00:00",
        "duration_s": 30.0,
        "history_csv": "low_stats_history.csv" if history else None,
        "requests": {
            f"{server}/resnet50_onnx": {
                "count": count,
                "failures": 0,
                "requests_per_s": rps,
                "latency_ms": summary(0.0),
                "ttfb_ms": summary(0.4),
                "distribution": distribution,
            }
        },
        "server_stats": server_stats,
        "locust": {"p50_ms": round(at[50]), "p95_ms": round(at[95]), "p99_ms": round(at[99])},
    }
    (folder / "latency.json").write_text(json.dumps(data, indent=2))
    if history:
        with (folder / "low_stats_history.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HISTORY_HEADER)
            for second in range(31):
                row = dict.fromkeys(HISTORY_HEADER, "N/A")
                row.update(Timestamp=STARTED + second, Type="", Name="Aggregated")
                if second == 0:
                    row.update({"User Count": 0, "Requests/s": 0.0, "Failures/s": 0.0})
                else:
                    wobble = 1.0 + 0.04 * math.sin(second)
                    row.update(
                        {
                            "User Count": 1,
                            "Requests/s": f"{rps * min(second, 10) / 10 * wobble:.6f}",
                            "Failures/s": 0.0,
                            "50%": round(at[50] * wobble),
                            "95%": round(at[95] * wobble),
                        }
                    )
                writer.writerow([row[h] for h in HISTORY_HEADER])
                # Locust also writes per-request rows; the report reads only Aggregated.
                writer.writerow([STARTED + second, 1, "POST", f"{server}/resnet50_onnx", *["999"] * 20])
    return data


TRITON_STATS = {
    "inference_count": 897.0,
    "execution_count": 897.0,
    "avg_batch_size": 1.0,
    "queue_ms": 0.104,
    "compute_input_ms": 0.213,
    "compute_infer_ms": 27.04,
    "compute_output_ms": 0.0871,
    "server_total_ms": 27.44,
    "client_mean_ms": 31.2,
    "client_minus_server_ms": 3.76,
}


@pytest.fixture()
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/results/{triton,litserve}`` with a run each; the working directory is ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    write_run(
        tmp_path / "results/triton", "triton", base=28.0, scale=1.3, peak=61.0, rps=29.9, server_stats=TRITON_STATS
    )
    write_run(tmp_path / "results/litserve", "litserve", base=33.0, scale=2.6, peak=88.0, rps=25.3, server_stats=None)
    return Path("results")


@pytest.fixture()
def report(results: Path) -> tuple[str, str, Path]:
    html_path, md_path = build_report([results / "triton", results / "litserve"], results)
    return html_path.read_text(), md_path.read_text(), html_path


class _Checker(HTMLParser):
    """Checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
        else:
            self.stack.pop()


def test_writes_both_files_with_both_servers_and_their_numbers(report: tuple[str, str, Path]) -> None:
    html, _, html_path = report
    assert html_path == Path("results/compare.html")
    assert Path("results/compare.md").is_file()
    assert "<title>Inference latency: triton vs litserve: resnet50_onnx, 2026-11-28</title>" in html
    for name in ("triton", "litserve"):
        assert f"{name}</th>" in html
    run = load_run(Path("results/triton"))
    lat = run.requests[0].latency_ms
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        assert f"<td>{format_ms(lat[key])}</td>" in html
    assert "<td>897</td>" in html  # count
    assert "<td>29.9</td>" in html  # requests/s
    assert "<td>27.0</td>" in html and "<td>3.76</td>" in html  # Triton's breakdown
    assert "triton: Locust 29 / 32 / 34 ms, ours 28.9 / 31.9 / 34.0 ms" in html


def test_html_has_one_titled_chart_per_section_with_a_line_per_server(report: tuple[str, str, Path]) -> None:
    html, _, _ = report
    charts = figures(html)
    assert list(charts) == CHART_IDS
    titles = [chart["layout"]["title"]["text"] for chart in charts.values()]
    assert titles == ["Latency distribution by percentile", "Throughput over time", "p50 and p95 latency over time"]
    names = {chart_id: [trace["name"] for trace in chart["data"]] for chart_id, chart in charts.items()}
    assert names == {
        "latency-distribution": ["triton", "litserve"],
        "throughput-over-time": ["triton", "litserve"],
        "latency-over-time": ["triton p50", "triton p95", "litserve p50", "litserve p95"],
    }
    distribution = charts["latency-distribution"]["layout"]
    assert distribution["xaxis"]["ticktext"] == ["0%", "90%", "99%", "99.9%", "99.99%", "max"]
    assert distribution["yaxis"]["title"]["text"] == "latency (ms)"
    assert charts["throughput-over-time"]["layout"]["xaxis"]["title"]["text"] == "seconds since the start of the run"
    dashes = [trace["line"]["dash"] for trace in charts["latency-over-time"]["data"]]
    assert dashes == ["solid", "dash", "solid", "dash"]  # p95 dashed, as the caption says
    for chart in charts.values():
        for trace in chart["data"]:
            assert "%{y" in trace["hovertemplate"] and trace["hovertemplate"].endswith(
                "<extra>%{fullData.name}</extra>"
            )
    # each chart is an image to assistive technology, described in words
    labels = re.findall(r'<div class="chart" role="img" aria-label="([^"]*)">', html)
    assert len(labels) == 3
    assert labels[0] == (
        "Latency by percentile, one line per server: triton p50 28.9 ms, p99 34.0 ms, max 61.0 ms; "
        "litserve p50 34.8 ms, p99 45.0 ms, max 88.0 ms"
    )


def _history_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["Name"] == "Aggregated"]


def _value(text: str) -> float | None:
    return None if text == "N/A" else float(text)


def test_chart_traces_hold_exactly_the_numbers_of_the_results(report: tuple[str, str, Path]) -> None:
    html, _, _ = report
    charts = figures(html)
    distribution, throughput, latency = (charts[chart_id]["data"] for chart_id in CHART_IDS)
    for i, server in enumerate(("triton", "litserve")):
        data = json.loads(Path(f"results/{server}/latency.json").read_text())
        (entry,) = data["requests"].values()
        assert distribution[i]["customdata"] == [p for p, _ in entry["distribution"]]
        assert distribution[i]["y"] == [ms for _, ms in entry["distribution"]]
        rows = _history_rows(Path(f"results/{server}/{data['history_csv']}"))
        seconds = [float(row["Timestamp"]) - STARTED for row in rows]  # both runs start at STARTED
        assert (throughput[i]["x"], throughput[i]["y"]) == (seconds, [_value(row["Requests/s"]) for row in rows])
        p50, p95 = latency[2 * i], latency[2 * i + 1]
        assert (p50["x"], p50["y"]) == (seconds, [_value(row["50%"]) for row in rows])
        assert (p95["x"], p95["y"]) == (seconds, [_value(row["95%"]) for row in rows])


def test_html_is_self_contained_and_well_formed(report: tuple[str, str, Path]) -> None:
    html, _, _ = report
    assert html.startswith("<!doctype html>")
    assert re.findall(r"<script\b[^>]*\bsrc\s*=", html, flags=re.I) == []  # nothing loaded from elsewhere
    # plotly.js is inlined exactly once, in <head>, and no other copy of any version is
    assert html.count(PLOTLYJS_TAG) == 1
    assert html.count("* plotly.js v") == 1
    assert html.index(PLOTLYJS_TAG) < html.index("</head>")
    own = without_plotlyjs(html)  # what the report wrote around the library
    assert re.findall(r"<script[^>]*>", own) == ["<script>"] * 3  # one inline script per chart
    lowered = own.lower()
    for needle in ("<link", "<img", "<iframe", " src=", " href=", "url(", "@import", "@font-face"):
        assert needle not in lowered, needle
    # The only absolute URLs are the servers' addresses shown as text.
    assert set(re.findall(r"https?://[^\s\"'<]+", own)) == {"http://127.0.0.1:8000", "http://127.0.0.1:8001"}
    # and the page forbids fetching anything: scripts and styles may only be inline
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html)
    assert policy is not None
    assert policy.group(1).split("; ") == [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "script-src 'unsafe-inline'",
        "img-src data:",
    ]
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []


def test_markdown_has_a_row_per_server_and_the_breakdown(report: tuple[str, str, Path]) -> None:
    _, md, _ = report
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| server | model |"))
    assert header.split(" | ")[2:5] == ["requests", "requests/s", "failures"]
    assert "| triton | resnet50_onnx | 897 | 29.9 | 0 | 28.9 | 31.0 | 34.0 | 37.0 | 61.0 | 28.5 |" in lines
    assert "| litserve | resnet50_onnx | 759 | 25.3 | 0 | 34.8 | 39.0 | 45.0 | 51.0 | 88.0 | 34.4 |" in lines
    assert "| triton | 1.00 | 0.104 | 0.213 | 27.0 | 0.0871 | 27.4 | 31.2 | 3.76 |" in lines
    assert "| litserve |" + " \u2014 |" * 8 in lines
    assert "Charts (latency distribution, throughput and latency over time): `compare.html`" in lines


def test_cli_prints_the_table_and_the_paths(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results/triton", "results/litserve", "--out", "out/here"]) == 0
    out = capsys.readouterr().out
    assert "| triton | resnet50_onnx |" in out and "| litserve | resnet50_onnx |" in out
    assert out.rstrip().endswith("wrote out/here/compare.html\nwrote out/here/compare.md")


def test_missing_latency_json_exits_2_with_what_to_do(results: Path) -> None:
    shutil.rmtree("results/litserve")
    Path("results/litserve").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "locust_inference.report", "results/triton", "results/litserve", "--out", "results"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "error: no latency.json in results/litserve: run a load test against litserve first "
        "(make performance-test CONFIG=configs/low.conf MODEL_NAME=resnet50_onnx SERVER=litserve)"
    )
    assert not Path("results/compare.html").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"version": 2, "server": "triton", "requests": {}}', "has version 2; this report reads version 1"),
        ('{"version": 1, "requests": {}}', "does not say which server"),
        ('{"version": 1, "server": "triton", "requests": {}}', "has no requests"),
    ],
)
def test_invalid_latency_json_exits_2(
    results: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    Path("results/triton/latency.json").write_text(content)
    assert main(["results/triton", "results/litserve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: results/triton/latency.json ") and message in err


def test_runs_without_history_still_get_a_report(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "triton", base=1.0, scale=0.1, peak=3.0, rps=500.0, server_stats=None, history=False)
    html_path, md_path = build_report([tmp_path / "a"], tmp_path / "out")
    html = html_path.read_text()
    assert list(figures(html)) == ["latency-distribution"]  # no history to chart
    assert html.count(PLOTLYJS_TAG) == 1
    assert "No per-second history was recorded." in html
    assert "triton: no history CSV recorded" in html
    assert "Server-side breakdown" not in md_path.read_text()


def test_a_run_over_grpc_is_labelled_so(tmp_path: Path) -> None:
    for name in ("http", "grpc"):
        write_run(tmp_path / name, "triton", base=1.0, scale=0.1, peak=3.0, rps=500.0, server_stats=None)
    data = json.loads((tmp_path / "grpc" / "latency.json").read_text())
    (tmp_path / "grpc" / "latency.json").write_text(json.dumps({**data, "protocol": "grpc"}))
    _, md_path = build_report([tmp_path / "http", tmp_path / "grpc"], tmp_path / "out")
    rows = [line.split("|")[1].strip() for line in md_path.read_text().splitlines() if "| resnet50_onnx |" in line]
    assert rows == ["triton", "triton gRPC"]


def test_a_page_with_nothing_to_chart_carries_no_plotlyjs(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "triton", base=1.0, scale=0.1, peak=3.0, rps=500.0, server_stats=None, history=False)
    path = tmp_path / "a/latency.json"
    data = json.loads(path.read_text())
    del data["requests"]["triton/resnet50_onnx"]["distribution"]
    path.write_text(json.dumps(data))
    html = build_report([tmp_path / "a"], tmp_path / "out")[0].read_text()
    assert "<script" not in html
    assert "No latency distribution was recorded." in html
    assert html.count("No per-second history was recorded.") == 2


def test_a_history_csv_that_is_named_but_missing_is_noted(results: Path) -> None:
    Path("results/litserve/low_stats_history.csv").unlink()
    html_path, _ = build_report([results / "triton", results / "litserve"], results)
    html = html_path.read_text()
    charts = figures(html)
    assert list(charts) == CHART_IDS
    assert [trace["name"] for trace in charts["throughput-over-time"]["data"]] == ["triton"]
    assert [trace["name"] for trace in charts["latency-over-time"]["data"]] == ["triton p50", "triton p95"]
    assert "litserve: litserve/low_stats_history.csv is missing" in html


def test_reports_name_files_relative_to_where_they_are_written(tmp_path: Path) -> None:
    """The demo passes absolute folders: the reports must not carry this machine's paths."""
    for server in ("triton", "triton-again"):
        write_run(tmp_path / "runs" / server, "triton", base=28.0, scale=1.3, peak=61.0, rps=29.9, server_stats=None)
    (tmp_path / "runs/triton-again/low_stats_history.csv").unlink()
    out = tmp_path / "runs"
    html_path, md_path = build_report([out / "triton", out / "triton-again"], out)
    md, html = md_path.read_text(), html_path.read_text()
    assert "Charts (latency distribution, throughput and latency over time): `compare.html`" in md
    assert "| triton (triton-again) | resnet50_onnx |" in md  # a repeated server is told apart by its folder
    assert "triton (triton-again): triton-again/low_stats_history.csv is missing" in html
    assert str(tmp_path) not in md + html


def test_failures_are_counted_on_top_of_the_successful_requests(results: Path) -> None:
    path = Path("results/litserve/latency.json")
    data = json.loads(path.read_text())
    data["requests"]["litserve/resnet50_onnx"]["failures"] = 41  # 759 ok + 41 failed = 800
    path.write_text(json.dumps(data))
    _, md_path = build_report([results / "triton", results / "litserve"], results)
    assert "| litserve | resnet50_onnx | 759 | 25.3 | 41 (5.1%) |" in md_path.read_text()


def make_open_loop(folder: Path, *, offered: float, achieved: float, dropped: int, unfinished: int) -> None:
    """Turns ``folder``'s run into an open-loop one, as latency.py writes it: ``open_loop`` and ``service_ms``."""
    path = folder / "latency.json"
    data = json.loads(path.read_text())
    (entry,) = data["requests"].values()
    completed = round(achieved * 30)
    entry["open_loop"] = {
        "offered_rate_per_s": offered,
        "scheduled": completed + dropped + unfinished,
        "sent": completed + unfinished,
        "dropped": dropped,
        "completed": completed,
        "unfinished": unfinished,
        "streams": 1,
        "stream_seconds": 30.0,
        "scheduled_per_s": (completed + dropped + unfinished) / 30.0,
        "achieved_per_s": achieved,
        "lag_ms": {"p50": 0.512, "p99": 1.04, "max": 3.21},
    }
    entry["service_ms"] = {k: v - 0.75 for k, v in entry["latency_ms"].items()}
    path.write_text(json.dumps(data, indent=2))


def _open_loop_md_rows(md: str) -> dict[str, str]:
    lines = md.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| server | kept up |")))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows[line.split(" | ")[0].removeprefix("| ")] = line
    return rows


def test_open_loop_run_shows_rates_drops_lags_and_both_latencies(results: Path) -> None:
    make_open_loop(results / "triton", offered=30.0, achieved=29.9, dropped=0, unfinished=2)
    html_path, md_path = build_report([results / "triton", results / "litserve"], results)
    rows = _open_loop_md_rows(md_path.read_text())
    # kept up, offered, achieved, dropped, unfinished, lag p50/p99/max, latency p50/p99, service p50/p99
    assert rows["triton"] == (
        "| triton | yes | 30.0 | 29.9 | 0 | 2 | 0.512 | 1.04 | 3.21 | 28.9 | 34.0 | 28.2 | 33.2 |"
    )
    html = html_path.read_text()
    assert '<h2 id="open-loop">Open loop: did each server keep up?</h2>' in html
    assert '<td class="text">yes</td><td>30.0</td><td>29.9</td><td>0</td><td>2</td><td>0.512</td>' in html


def test_closed_loop_run_shows_dashes_in_the_open_loop_table(results: Path) -> None:
    make_open_loop(results / "triton", offered=30.0, achieved=29.9, dropped=0, unfinished=0)
    html_path, md_path = build_report([results / "triton", results / "litserve"], results)
    rows = _open_loop_md_rows(md_path.read_text())
    assert rows["litserve"] == "| litserve |" + " \u2014 |" * 12
    assert '<td class="text">\u2014</td>' + "<td>\u2014</td>" * 11 + "</tr>" in html_path.read_text()


def test_a_run_that_dropped_requests_did_not_keep_up(results: Path) -> None:
    make_open_loop(results / "litserve", offered=30.0, achieved=16.7, dropped=399, unfinished=4)
    _, md_path = build_report([results / "triton", results / "litserve"], results)
    rows = _open_loop_md_rows(md_path.read_text())
    assert rows["litserve"].startswith("| litserve | no | 30.0 | 16.7 | 399 | 4 |")


def test_a_run_below_99_percent_of_its_offered_rate_did_not_keep_up(results: Path) -> None:
    make_open_loop(results / "litserve", offered=30.0, achieved=29.6, dropped=0, unfinished=0)
    _, md_path = build_report([results / "triton", results / "litserve"], results)
    rows = _open_loop_md_rows(md_path.read_text())
    assert rows["litserve"].startswith("| litserve | no | 30.0 | 29.6 | 0 |")


def test_closed_loop_runs_only_get_no_open_loop_table(report: tuple[str, str, Path]) -> None:
    html, md, _ = report
    assert "Open loop" not in md + html


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (30.91, "30.9"),
        (1234.5, "1230"),
        (0.12345, "0.123"),
        (5.0, "5.00"),
        (99.96, "100"),
        (0.0, "0"),
        (None, "\u2014"),
    ],
)
def test_three_significant_digits(value: float | None, text: str) -> None:
    assert format_ms(value) == text


def test_importing_the_report_does_not_import_locust() -> None:
    code = "import sys, locust_inference.report; print('locust' in sys.modules, 'gevent' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def _sweep(server: str) -> dict[str, Any]:
    return json.loads(Path(f"results/{server}/sweep.json").read_text())


@pytest.fixture()
def swept(results: Path) -> tuple[str, str]:
    """The two servers' results with a sweep each (the real samples: Triton's concurrency sweep, and its rate
    sweep standing in for LitServe's, without a server breakdown); returns the page and the Markdown."""
    shutil.copy(SWEEPS / "triton-concurrency.json", results / "triton/sweep.json")
    rate = json.loads((SWEEPS / "triton-rate.json").read_text())
    rate["server"] = "litserve"
    for step in rate["steps"]:
        step["server"] = None
    rate["steps"][1]["stable"] = False  # the samples' steps all stabilised: one that did not, to draw
    (results / "litserve/sweep.json").write_text(json.dumps(rate, indent=2))
    html_path, md_path = build_report([results / "triton", results / "litserve"], results)
    return html_path.read_text(), md_path.read_text()


def test_sweep_charts_hold_exactly_the_numbers_of_the_sweep_files(swept: tuple[str, str]) -> None:
    html, _ = swept
    charts = figures(html)
    assert list(charts) == CHART_IDS + SWEEP_CHART_IDS
    curves = {trace["name"]: trace for trace in charts["sweep-latency-throughput"]["data"]}
    triton, litserve = _sweep("triton"), _sweep("litserve")
    slos = [triton["goodput"]["slo"], litserve["goodput"]["slo"]]
    assert slos[0] != slos[1]  # so each gets its line
    names = [f"{server} {p}" for server in ("triton", "litserve") for p in ("p50", "p90", "p99")]
    assert list(curves) == [*names, *(f"SLO {slo}" for slo in slos), "triton goodput"]
    for server, sweep in (("triton", triton), ("litserve", litserve)):
        steps = sweep["steps"]
        for p in ("p50", "p90", "p99"):
            trace = curves[f"{server} {p}"]
            assert trace["x"] == [s["achieved_per_s"] for s in steps]
            assert trace["y"] == [s["latency_ms"][p] for s in steps]
            assert trace["marker"]["symbol"] == ["circle" if s["stable"] else "circle-open" for s in steps]
            assert trace["customdata"] == [
                [s["step"], s["load"], *(s["latency_ms"][k] for k in ("p50", "p90", "p99", "p99.9")),
                 "stable" if s["stable"] else "unstable"]
                for s in steps
            ]  # fmt: skip
        assert curves[f"{server} p50"]["line"]["color"] == curves[f"{server} p99"]["line"]["color"]
    assert curves["triton p50"]["line"]["color"] != curves["litserve p50"]["line"]["color"]
    assert "circle-open" in curves["litserve p99"]["marker"]["symbol"]
    for sweep in (triton, litserve):
        slo = sweep["goodput"]
        assert curves[f"SLO {slo['slo']}"]["y"] == [slo["slo_ms"], slo["slo_ms"]]
    good = triton["goodput"]
    marker = curves["triton goodput"]
    assert marker["x"] == [good["rate_per_s"], good["rate_per_s"]]
    assert marker["y"][1] == good["slo_ms"]
    assert marker["text"][1] == f"{good['rate_per_s']:.3g} req/s (interpolated)"
    assert litserve["goodput"]["rate_per_s"] is None  # no marker for it
    (batch,) = charts["sweep-batch-size"]["data"]  # LitServe reports no batch size
    assert batch["name"] == "triton"
    assert batch["x"] == [s["achieved_per_s"] for s in triton["steps"]]
    assert batch["y"] == [s["server"]["avg_batch_size"] for s in triton["steps"]]
    assert [row[2] for row in batch["customdata"]] == [s["server"]["queue_ms"] for s in triton["steps"]]


def _count_text(value: int | None) -> str:
    return "\u2014" if value is None else f"{value:,}"


def _sweep_md_rows(sweep: dict[str, Any]) -> list[str]:
    """What the Markdown table should say for each step of ``sweep``, formatted as the report formats it."""
    rows = []
    for s in sweep["steps"]:
        load = str(s["users"]) if sweep["mode"] == "concurrency" else f"{s['offered_rate_per_s']:g}"
        cells = [
            str(s["step"]),
            load,
            format_ms(s["achieved_per_s"]),
            *(format_ms(s["latency_ms"][p]) for p in ("p50", "p90", "p99", "p99.9")),
            _count_text(s["failures"]),
            _count_text(s["dropped"]),
            str(s["windows"]),
            "yes" if s["stable"] else "NO",
        ]
        if s["server"] is not None:
            cells += [format_ms(s["server"]["avg_batch_size"]), format_ms(s["server"]["queue_ms"])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def test_sweep_tables_hold_the_numbers_of_the_sweep_files(swept: tuple[str, str]) -> None:
    html, md = swept
    lines = md.splitlines()
    assert "## Load sweep" in lines
    for server in ("triton", "litserve"):
        sweep = _sweep(server)
        heading = f"### {server}: {sweep['mode']} steps, {sweep['model']}"
        start = lines.index(heading)
        table = [line for line in lines[start:] if line.startswith("|")][: 2 + len(sweep["steps"])]
        header = table[0].strip("| ").split(" | ")
        unit = "users" if sweep["mode"] == "concurrency" else "offered req/s"
        assert header[:11] == [
            "step", unit, "achieved req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "failures", "dropped",
            "windows", "stable",
        ]  # fmt: skip
        assert header[11:] == (["avg batch", "queue ms"] if server == "triton" else [])
        expected = _sweep_md_rows(sweep)
        assert table[2:] == expected
        for row in expected:  # the same cells in the page's table
            assert "<td>" + "</td><td>".join(row.strip("| ").split(" | ")[1:]) + "</td></tr>" in html
        plan = sweep["plan"]
        steps = ", ".join(f"{v:g}" for v in plan["steps"])
        what = (
            f"concurrency steps {steps} users (closed loop)"
            if sweep["mode"] == "concurrency"
            else f"rate steps {steps} req/s offered, {plan['stream_rate']:g} req/s per open-loop user"
        )
        plan_line = (
            f"Plan: {what}; {plan['window_s']} s windows after a {plan['warmup_s']} s warm-up; stable when the "
            f"last {plan['stable_windows']} windows agree within {plan['tolerance'] * 100:g}% on throughput and p99 "
            f"(at most {plan['max_windows']} windows a step); SLO {plan['slo']}."
        )
        assert lines[start + 2] == plan_line
        assert escape(plan_line) in html
        good = sweep["goodput"]
        if good["rate_per_s"] is None:
            goodput = f"Goodput at {good['slo']}: none, {good['how'].removeprefix('none: ')}."
        else:
            goodput = f"Goodput at {good['slo']}: {format_ms(good['rate_per_s'])} req/s, {good['how']}."
        assert goodput in lines and escape(goodput) in html
    assert lines.index("### triton: concurrency steps, sleep_20ms") < lines.index(
        "### litserve: rate steps, sleep_20ms"
    )
    assert "sweep from <code>triton/sweep.json</code>" in html


def test_a_stopped_sweep_says_why(results: Path) -> None:
    data = json.loads((SWEEPS / "triton-concurrency.json").read_text())
    data["steps"] = data["steps"][:2]
    data["stopped"] = "stopped at step 2: p99 39.2 ms is past the limit p99 <= 35 ms"
    Path("results/triton/sweep.json").write_text(json.dumps(data))
    html_path, md_path = build_report([results / "triton", results / "litserve"], results)
    md, html = md_path.read_text(), html_path.read_text()
    assert "Stopped at step 2: p99 39.2 ms is past the limit p99 &lt;= 35 ms." in html
    assert "Stopped at step 2: p99 39.2 ms is past the limit p99 <= 35 ms." in md.splitlines()
    assert len(figures(html)["sweep-latency-throughput"]["data"][0]["x"]) == 2


def test_without_any_sweep_json_there_is_no_sweep_section(report: tuple[str, str, Path]) -> None:
    html, md, _ = report
    assert "Load sweep" not in html + md
    assert "sweep" not in without_plotlyjs(html).lower()
    assert list(figures(html)) == CHART_IDS


def test_one_sweep_is_enough_for_the_section(results: Path) -> None:
    shutil.copy(SWEEPS / "triton-concurrency.json", results / "triton/sweep.json")
    html_path, md_path = build_report([results / "triton", results / "litserve"], results)
    html, md = html_path.read_text(), md_path.read_text()
    assert '<h2 id="sweep">Load sweep</h2>' in html and "## Load sweep" in md
    names = [trace["name"] for trace in figures(html)["sweep-latency-throughput"]["data"]]
    assert not any(name.startswith("litserve") for name in names)
    assert "### litserve" not in md


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"version": 2}', "has version 2; this report reads version 1"),
        ('{"version": 1, "mode": "linear", "steps": []}', "has mode 'linear'"),
        ('{"version": 1, "mode": "rate", "server": "triton"}', "has no steps list"),
        ('{"version": 1, "mode": "rate", "server": "triton", "steps": [{"load": 20}]}', "steps[0] has no achieved"),
        ('{"version": 1, "mode": "rate", "server": "litserve", "steps": []}', "is a sweep of litserve but"),
        (
            '{"version": 1, "mode": "rate", "server": "triton", "steps": [{"load": 20, "achieved_per_s": 1, '
            '"latency_ms": {"p50": 1}, "stable": true, "models": [1]}]}',
            "steps[0].models is not an object",
        ),
        (
            '{"version": 1, "mode": "rate", "server": "triton", "steps": [{"load": 20, "achieved_per_s": 1, '
            '"latency_ms": {"p50": 1}, "stable": true, "models": {"triton/a": {"latency_ms": {"p50": 1}}}}]}',
            "steps[0] has no achieved_per_s",
        ),
    ],
)
def test_invalid_sweep_json_exits_2_with_one_line(
    results: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    Path("results/triton/sweep.json").write_text(content)
    assert main(["results/triton", "results/litserve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: results/triton/sweep.json") and message in err
    assert err.count("\n") == 1
    assert not Path("results/compare.html").exists()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI is set, so this is an error): apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _render(page: Path, tmp_path: Path) -> str:
    """``page`` as headless Chromium leaves it once loaded (scripts run); fails on any console message."""
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Chromium logs every console message as "<LEVEL>:CONSOLE" (INFO for uncaught errors and for
    # Content-Security-Policy violations, i.e. attempts to fetch something); a page that draws cleanly logs none.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], "\n".join(console)
    assert "Content Security Policy" not in proc.stderr
    return proc.stdout


def _chart_doms(dom: str, chart_ids: list[str] = CHART_IDS) -> dict[str, str]:
    """Each chart's part of the rendered DOM, from its div to the next chart's."""
    starts = [dom.index(f'<div id="{chart_id}"') for chart_id in chart_ids]
    return {chart_id: dom[a:b] for chart_id, a, b in zip(chart_ids, starts, [*starts[1:], len(dom)], strict=True)}


def _assert_drawn(html: str, dom: str) -> None:
    """plotly.js ran and drew every chart of ``html`` in ``dom``: its title and one line per trace, in its colour."""
    charts = figures(html)
    doms = _chart_doms(dom, list(charts))
    for chart_id, chart in charts.items():
        drawn = doms[chart_id]
        assert re.findall(r'<text class="gtitle"[^>]*>([^<]*)</text>', drawn) == [chart["layout"]["title"]["text"]]
        strokes = re.findall(
            r'<g class="trace scatter[^"]*"[^>]*><g class="fills"></g><g class="errorbars"></g><g class="lines">'
            r'<path class="js-line" d="M[^"]+" style="[^"]*stroke: rgb\((\d+), (\d+), (\d+)\)',
            drawn,
        )
        colors = [trace["line"]["color"].upper() for trace in chart["data"]]
        assert [f"#{int(r):02X}{int(g):02X}{int(b):02X}" for r, g, b in strokes] == colors


def test_chromium_renders_the_page_without_errors(report: tuple[str, str, Path], tmp_path: Path) -> None:
    html, _, html_path = report
    dom = _render(html_path, tmp_path)
    for name in ("triton", "litserve"):
        assert f"{name}</th>" in dom
    _assert_drawn(html, dom)


def test_chromium_draws_the_sweep_charts(swept: tuple[str, str], tmp_path: Path) -> None:
    html, _ = swept
    dom = _render(Path("results/compare.html"), tmp_path)
    assert list(figures(html)) == CHART_IDS + SWEEP_CHART_IDS
    _assert_drawn(html, dom)
    doms = _chart_doms(dom, CHART_IDS + SWEEP_CHART_IDS)
    # a marker per step and percentile (3 percentiles, 4 + 3 steps) and the goodput's two; one per step for batch
    points = {chart_id: len(re.findall(r'<path class="point[ "]', doms[chart_id])) for chart_id in SWEEP_CHART_IDS}
    assert points == {"sweep-latency-throughput": 3 * (4 + 3) + 2, "sweep-batch-size": 4}
    texts = re.findall(
        r'<g class="textpoint"[^>]*><text [^>]*data-unformatted="([^"]*)"', doms["sweep-latency-throughput"]
    )
    labels = [unescape(text) for text in texts]
    triton, litserve = (_sweep(server) for server in ("triton", "litserve"))
    assert sorted(label for label in labels if label) == sorted(
        [
            f"{triton['goodput']['rate_per_s']:.3g} req/s (interpolated)",  # litserve's SLO was never met
            f"SLO {triton['goodput']['slo']}",
            f"SLO {litserve['goodput']['slo']}",
        ]
    )


def test_chromium_shows_the_values_on_hover(report: tuple[str, str, Path], tmp_path: Path) -> None:
    """Hovers the 6th point of each chart's first line (as a mouse would) and reads the label plotly draws."""
    html, _, _ = report
    point = 5
    probe = (
        f"<script>for (const id of {json.dumps(CHART_IDS)}) "
        f"Plotly.Fx.hover(id, [{{curveNumber: 0, pointNumber: {point}}}]);</script>\n</body>"
    )
    hovered = tmp_path / "hovered.html"
    hovered.write_text(html.replace("</body>", probe))
    doms = _chart_doms(_render(hovered, tmp_path))
    labels = {
        chart_id: re.findall(r'<g class="hovertext".*?</g>', drawn, flags=re.S) for chart_id, drawn in doms.items()
    }
    texts = {
        chart_id: [re.findall(r"<text[^>]*>([^<]*)</text>", label) for label in found]
        for chart_id, found in labels.items()
    }
    data = json.loads(Path("results/triton/latency.json").read_text())
    (entry,) = data["requests"].values()
    p, ms = entry["distribution"][point]
    row = _history_rows(Path("results/triton") / data["history_csv"])[point]
    t = float(row["Timestamp"]) - STARTED
    assert texts == {
        "latency-distribution": [["triton", f"p{p:g}: {format_ms(ms)} ms"]],
        "throughput-over-time": [["triton", f"{t:.1f} s: {format_ms(float(row['Requests/s']))} requests/s"]],
        "latency-over-time": [["triton p50", f"{t:.1f} s: {float(row['50%']):g} ms"]],
    }


def test_the_demo_and_the_bench_read_latency_json_by_its_one_schema(tmp_path: Path) -> None:
    """The demo's table and the bench read latency.json through results_schema.read, as the report does: a
    file of this version gives them its numbers, one of another version is refused by every reader alike."""
    from locust_inference import results_schema

    from bench.clients import Result, add_open_loop
    from servers.demo import read_measured

    percentiles = {"p50": 1.5, "p95": 2.5, "p99": 3.5}
    open_loop = {"offered_rate_per_s": 30.0, "achieved_per_s": 29.5, "dropped": 2, "unfinished": 1, "lag_ms": {}}
    entry = {"latency_ms": percentiles, "service_ms": percentiles, "open_loop": open_loop}
    path = tmp_path / results_schema.LATENCY_FILE
    document = {"version": results_schema.VERSION, "server": "triton", "requests": {"triton/m": entry}}
    path.write_text(json.dumps(document))
    measured = read_measured(path, "triton/m")
    assert measured is not None and (measured.latency_ms, measured.dropped) == (percentiles, 2)
    assert add_open_loop(Result(), path).offered_rate == 30.0
    path.write_text(json.dumps({**document, "version": results_schema.VERSION + 1}))
    assert read_measured(path, "triton/m") is None
    assert add_open_loop(Result(), path).offered_rate is None
    with pytest.raises(ReportError, match=f"has version {results_schema.VERSION + 1}"):
        load_run(tmp_path)
