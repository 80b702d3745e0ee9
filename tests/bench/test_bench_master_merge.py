"""bench/master_merge.py measures real merges: the master it replays reports into counts every request of
every replayed report, in our histograms and in Locust's statistics; and its section of bench/RESULTS.md
survives bench/run.py rewriting the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from support.runs import REPO_ROOT, clean_env

from bench import sections


def test_every_replayed_report_is_merged_by_ours_and_by_locusts_listeners() -> None:
    samples, reports, reps, repeats = 300, 2, 5, 2
    # In a subprocess: importing Locust monkey-patches the process (gevent).
    script = (
        "import dataclasses, json; from bench import master_merge; "
        f"r = master_merge.measure(samples={samples}, reports={reports}, reps={reps}, repeats={repeats}, "
        "open_loop=True); print(json.dumps(dataclasses.asdict(r)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = SimpleNamespace(**json.loads(proc.stdout.splitlines()[-1]))
    # each listener ran once alone and once with the others, for every replayed report
    assert result.replayed == 2 * repeats * reps
    assert result.merged_requests == result.replayed * samples
    assert result.merged_locust_requests == result.replayed * samples
    assert len(result.wire_bytes) == len(result.ours_bytes) == reports
    assert all(0 < ours < wire for ours, wire in zip(result.ours_bytes, result.wire_bytes, strict=True))
    assert [len(r) for r in (result.decode_us, result.ours_us, result.locust_us, result.total_us)] == [repeats] * 4


def test_a_marked_section_is_replaced_in_place_and_kept_by_a_rewrite(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nold table\n")
    sections.write_section(results, "bench.x", "## X\n\nfirst")
    sections.write_section(results, "bench.x", "## X\n\nsecond")
    text = results.read_text()
    assert text == (
        "# Benchmark results\n\nold table\n\n<!-- bench.x: begin -->\n## X\n\nsecond\n<!-- bench.x: end -->\n"
    )
    # what bench/run.py does when it writes a new report
    kept = sections.kept_sections(results)
    assert kept == "<!-- bench.x: begin -->\n## X\n\nsecond\n<!-- bench.x: end -->\n"
    assert sections.kept_sections(tmp_path / "missing.md") == ""
