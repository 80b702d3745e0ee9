"""Sections of bench/RESULTS.md written by other benchmarks than bench/run.py: each sits between its own
markers, and whoever rewrites the file keeps the sections it does not write."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["begin", "end", "kept_sections", "publish", "write_section"]

_MARKER = re.compile(r"<!-- (?P<name>[\w.]+): begin -->.*?<!-- (?P=name): end -->\n?", re.DOTALL)


def begin(name: str) -> str:
    return f"<!-- {name}: begin -->"


def end(name: str) -> str:
    return f"<!-- {name}: end -->"


def kept_sections(path: Path, skip: tuple[str, ...] = ()) -> str:
    """Every marked section of ``path`` but those named in ``skip`` (none when the file does not exist), each
    ending with a newline."""
    if not path.exists():
        return ""
    return "".join(
        m.group(0).rstrip("\n") + "\n" for m in _MARKER.finditer(path.read_text()) if m.group("name") not in skip
    )


def write_section(path: Path, name: str, body: str) -> None:
    """Puts ``body`` between ``name``'s markers in ``path``: in place of that section if it is there, else
    at the end."""
    section = f"{begin(name)}\n{body.strip(chr(10))}\n{end(name)}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin(name)) + r".*?" + re.escape(end(name)) + r"\n?", re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _m: section, old, count=1)
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + section
    path.write_text(new)


def publish(body: str, verdicts: Sequence[tuple[str, bool | None]], output: Path | None, name: str) -> None:
    """Prints a benchmark's section and the goals it missed (or could not measure), then writes it into
    ``output`` under ``name``'s markers."""
    print()
    print(body)
    for label, ok in verdicts:
        if not ok:
            print(f"  {'not measured' if ok is None else 'missed'}: {label}")
    if output is not None:
        write_section(output, name, body)
        print(f"written to {output}")
