"""Command line and entry point: ``python -m locust_inference.report DIR [DIR ...] --out OUTDIR``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .page import render_html
from .runs import ReportError, label_runs, load_run
from .tables import render_markdown


def build_report(dirs: Iterable[Path], out: Path) -> tuple[Path, Path]:
    """Reads each run folder, writes ``out/compare.html`` and ``out/compare.md``, returns their paths.

    The reports name every file and folder relative to ``out``, where they are written: nothing in them
    depends on the machine or the directory they were made in. Raises :class:`ReportError` when a folder
    has no usable ``latency.json``.
    """
    runs = [load_run(Path(d), Path(os.path.relpath(Path(d).resolve(), out.resolve()))) for d in dirs]
    if not runs:
        raise ReportError("no run folders given")
    label_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "compare.html", out / "compare.md"
    html_path.write_text(render_html(runs), encoding="utf-8")
    md_path.write_text(render_markdown(runs, html_path), encoding="utf-8")
    return html_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m locust_inference.report DIR [DIR ...] --out OUTDIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m locust_inference.report",
        description="Compare load-test runs: writes OUTDIR/compare.html (charts) and OUTDIR/compare.md (tables).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a run folder holding latency.json")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where to write (default: results)")
    args = parser.parse_args(argv)
    try:
        html_path, md_path = build_report(args.dirs, args.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the report to {args.out}: {e}", file=sys.stderr)
        return 2
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {html_path}")
    print(f"wrote {md_path}")
    return 0
