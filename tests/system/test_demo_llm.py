"""`make demo-llm` end to end, shortened: the generator on both real servers, both runs, the token table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.runs import REPO_ROOT, clean_env


def test_demo_llm_runs_both_servers_and_prints_the_token_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servers.demo_llm"],
        cwd=REPO_ROOT,
        env=clean_env(DEMO_RUN_TIME="3s", DEMO_USERS="2", DEMO_RESULTS=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = proc.stdout
    for model, heading in (("synthetic_llm", "synthetic generator"), ("tiny_gpt", "tiny_gpt (a 6-layer decoder")):
        section = out[out.index(heading) :].split("\n\n")[1]  # the heading, a blank line, then the table
        rows = {line.split()[0]: line for line in section.splitlines() if line.startswith(("litserve ", "triton "))}
        assert set(rows) == {"litserve", "triton"}, out[-3000:]
        assert rows["litserve"].endswith("usage") and rows["triton"].endswith("chunks (approximate)")
        for server, row in rows.items():
            document = json.loads((tmp_path / "llm" / model / server / "latency.json").read_text())
            (entry,) = document["requests"].values()
            tokens = entry["tokens"]
            # every request asked for 64 tokens, which both models give: all came
            assert tokens["output_tokens_total"] == 64 * tokens["token_requests"] > 0
            assert row.split()[1] == str(entry["count"]) and row.split()[3] == f"{tokens['ttft_ms']['p50']:.2f}"
        # the side-by-side report has the token table, one row per server, tokens counted as the table says
        markdown = (tmp_path / "llm" / model / "compare.md").read_text()
        token_rows = [line for line in markdown.splitlines() if line.startswith(("| litserve |", "| triton |"))]
        assert [r.split("|")[-2].strip() for r in token_rows][-2:] == ["usage", "chunks (approximate)"], markdown
        assert '<h2 id="tokens">Tokens</h2>' in (tmp_path / "llm" / model / "compare.html").read_text()


def test_demo_llm_refuses_a_bad_run_time(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servers.demo_llm"],
        cwd=REPO_ROOT,
        env=clean_env(DEMO_RUN_TIME="soon", DEMO_RESULTS=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "demo-llm: DEMO_RUN_TIME must be like 15s, 2m or 1m30s, not 'soon'"
