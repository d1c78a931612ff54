"""Regenerate the benchmark result blocks in README.md and docs/*.md.

A block is

    <!-- results:NAME -->
    ...
    <!-- /results:NAME -->

and its body is what ``benchmarks/NAME.py``'s ``markdown(result)`` renders from
``benchmarks/results/NAME.json`` (headings demoted to fit inside a section,
links to result files made relative to the document). The script imports each
benchmark by path; importing a benchmark runs nothing.

The block named ``glance`` is the one-table summary in README.md: one row per
benchmark, with the line its optional ``headline(result)`` returns, a link to the
doc that holds its full tables, and the command that reproduces it.

    python scripts/make_docs.py          # rewrite stale blocks in place
    python scripts/make_docs.py --check  # list stale blocks, exit 1 if any
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
LOCAL_LINK = re.compile(r"\]\((?P<target>[\w.-]+\.(?:png|svg|md|json))\)")


def documents(root: Path = ROOT) -> list[Path]:
    """The files that may hold result blocks."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _benchmark(name: str, root: Path):
    path = root / "benchmarks" / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"error: results block '{name}' has no benchmarks/{name}.py; "
                         "name a benchmark script's stem or remove the block")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(root))
    if not callable(getattr(module, "markdown", None)):
        raise SystemExit(f"error: benchmarks/{name}.py has no markdown(result) function; add one that renders "
                         "its tables from the results JSON")
    return module


def _call(module, func: str, result_json: Path) -> str:
    """``module.func(result)``; a script whose function does not fit its committed JSON is named."""
    try:
        return getattr(module, func)(json.loads(result_json.read_text()))
    except Exception as exc:
        raise SystemExit(f"error: {Path(module.__file__).name}'s {func}() fails on "
                         f"benchmarks/results/{result_json.name}: {type(exc).__name__}: {exc}; rerun the benchmark "
                         f"or fix {func}()") from None


def _first_line(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0].rstrip(".") if module.__doc__ else ""


def glance(doc: Path, root: Path = ROOT) -> str:
    """The README's summary table: one row per benchmark that has results."""
    homes = {}
    for other in documents(root):
        if other != doc:
            for m in BLOCK.finditer(other.read_text()):
                homes.setdefault(m["name"], other)
    rows = ["| benchmark | what | measured | reproduce |", "| --- | --- | --- | --- |"]
    for script in sorted((root / "benchmarks").glob("*.py")):
        result_json = root / "benchmarks" / "results" / f"{script.stem}.json"
        if not result_json.is_file():
            continue
        module = _benchmark(script.stem, root)
        result = json.loads(result_json.read_text())
        head = _call(module, "headline", result_json) if callable(getattr(module, "headline", None)) else ""
        home = homes.get(script.stem)
        name = (f"[{script.stem}]({Path(os.path.relpath(home, doc.parent)).as_posix()})" if home
                else f"`{script.stem}`")
        cmd = result.get("command", f"python benchmarks/{script.name}")
        rows.append(f"| {name} | {_first_line(module)} | {head or 'see the doc'} | `{cmd}` |")
    return "\n".join(rows) + "\n"


def render(name: str, doc: Path, root: Path = ROOT) -> str:
    """The block body for benchmark ``name`` inside document ``doc``."""
    if name == "glance":
        return glance(doc, root)
    result_json = root / "benchmarks" / "results" / f"{name}.json"
    if not result_json.is_file():
        raise SystemExit(f"error: results block '{name}' has no benchmarks/results/{name}.json; "
                         f"run python benchmarks/{name}.py first")
    text = _call(_benchmark(name, root), "markdown", result_json)
    rel = Path(os.path.relpath(root / "benchmarks" / "results", doc.parent)).as_posix()
    lines = []
    for line in text.strip().splitlines():
        if line.startswith("#"):
            line = "##" + line  # a benchmark's "# Title" sits inside a doc's "## Section"
        lines.append(LOCAL_LINK.sub(lambda m: f"]({rel}/{m['target']})", line))
    return "\n".join(lines) + "\n"


def refresh(doc: Path, root: Path = ROOT) -> tuple[str, list[str]]:
    """The document with every block regenerated, and the names of the blocks that changed."""
    text = doc.read_text()
    stale: list[str] = []

    def sub(m: re.Match) -> str:
        body = render(m["name"], doc, root)
        if body != m["body"]:
            stale.append(m["name"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text), stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only list stale blocks; exit 1 if any")
    args = ap.parse_args(argv)
    any_stale = False
    for doc in documents():
        new, stale = refresh(doc)
        if not stale:
            continue
        any_stale = True
        where = doc.relative_to(ROOT)
        if args.check:
            print(f"{where}: stale results blocks: {', '.join(stale)} (run make docs)")
        else:
            tmp = doc.with_name(f".{doc.name}.tmp")
            tmp.write_text(new)
            os.replace(tmp, doc)  # atomic: a reader never sees half a document
            print(f"{where}: regenerated {', '.join(stale)}")
    return 1 if (args.check and any_stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
