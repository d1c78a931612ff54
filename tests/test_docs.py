"""The docs: generated result tables agree with their JSON, the README stays short, nothing cites
files outside the repository, and relative links resolve. No Ray."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
make_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_docs)

OUTSIDE = re.compile(r"STYLE\.md|ANCHORS\.md|DESIGN\.md|\.\./shared|/work/|\bissue #?\d+", re.I)
LINK = re.compile(r"\]\((?!https?:|#)(?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def test_every_committed_results_block_matches_its_json():
    stale = {doc.name: make_docs.refresh(doc)[1] for doc in make_docs.documents()}
    assert {k: v for k, v in stale.items() if v} == {}, "run `make docs` and commit the result"


def test_every_benchmark_renders_markdown_from_its_json_alone():
    benches = sorted((ROOT / "benchmarks").glob("*.py"))
    assert benches
    embedded = {m["name"] for doc in make_docs.documents() for m in make_docs.BLOCK.finditer(doc.read_text())}
    for script in benches:
        module = make_docs._benchmark(script.stem, ROOT)  # importing runs nothing: no Ray, no files
        assert callable(module.markdown), script
        if (ROOT / "benchmarks" / "results" / f"{script.stem}.json").is_file():
            assert script.stem in embedded, f"{script.stem}'s results are in no doc"


def test_a_hand_edited_table_is_detected_and_regenerated(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "toy.py").write_text(
        '"""Toy."""\ndef markdown(r):\n    return f"# Toy\\n\\n| x |\\n| --- |\\n| {r[\'x\']} |\\n![p](toy.png)"\n')
    (tmp_path / "benchmarks" / "results" / "toy.json").write_text('{"x": 42}')
    doc = tmp_path / "docs" / "toy.md"
    doc.write_text("intro\n<!-- results:toy -->\n| x |\n| --- |\n| 41 |\n<!-- /results:toy -->\nafter\n")
    new, stale = make_docs.refresh(doc, tmp_path)
    assert stale == ["toy"]
    assert "| 42 |" in new and "| 41 |" not in new and new.endswith("after\n")
    assert "### Toy" in new and "](../benchmarks/results/toy.png)" in new
    doc.write_text(new)
    assert make_docs.refresh(doc, tmp_path)[1] == []


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024


def _repo_texts():
    for folder in ("mixfleet", "examples", "benchmarks", "scripts", "tests", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".txt"} and path != Path(__file__):
                yield path
    yield ROOT / "README.md"
    yield ROOT / "Makefile"


def test_nothing_cites_files_outside_the_repository_or_issue_numbers():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _repo_texts()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


@pytest.mark.parametrize("doc", make_docs.documents(), ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    missing = [m["target"] for m in LINK.finditer(doc.read_text()) if not (doc.parent / m["target"]).exists()]
    assert missing == []
