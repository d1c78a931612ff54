"""The classic MapReduce lab's semantics on the 8 books, on the session's local Ray."""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mixfleet.mapreduce import run

HERE = Path(__file__).resolve().parent
WORD = re.compile(r"[A-Za-z]+")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


jobs = _load(HERE / "mr_testjobs.py", "mr_testjobs")
examples = HERE.parents[1] / "examples" / "mapreduce"
wordcount = _load(examples / "wordcount.py", "mr_example_wordcount")
indexer = _load(examples / "indexer.py", "mr_example_indexer")
wordcount_fast = _load(examples / "wordcount_fast.py", "mr_example_wordcount_fast")


@pytest.fixture(scope="module")
def books(data_dir):
    return sorted((data_dir / "gutenberg").glob("pg-*.txt"))


def _lines(paths):
    for p in paths:
        yield from p.read_text().split("\n")


def ref_wordcount(paths) -> list[tuple[str, str]]:
    counts = Counter(w for line in _lines(paths) for w in WORD.findall(line))
    return sorted((w, str(c)) for w, c in counts.items())


def ref_index(paths) -> list[tuple[str, str]]:
    docs = defaultdict(set)
    for p in paths:
        for w in WORD.findall(p.read_text()):
            docs[w].add(p.name)
    return sorted((w, f"{len(d)} {','.join(sorted(d))}") for w, d in docs.items())


def test_wordcount_equals_the_sequential_reference(ray_local, books, tmp_path):
    result = run(wordcount.WordCount, [str(b) for b in books], str(tmp_path / "out"), split_bytes=400_000,
                 speculation=False)  # exact attempt counts below
    assert sorted(result.read()) == ref_wordcount(books)
    assert result.map_tasks >= 8 and result.reduce_tasks >= 2
    c = result.counters["mixfleet"]
    assert c["map_output_records"] == 623_948 and c["reduce_output_records"] == 22_107
    assert c["reduce_input_records"] < c["map_output_records"] / 5  # the combiner ran map-side
    assert result.attempts == {"launched": result.map_tasks + result.reduce_tasks, "failed": 0, "speculative": 0}
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [f"part-r-{i:05d}" for i in range(result.reduce_tasks)]


def test_indexer_equals_the_sequential_reference(ray_local, books, tmp_path):
    result = run(indexer.Indexer, [str(b) for b in books], str(tmp_path / "idx"), num_reducers=3)
    assert sorted(result.read()) == ref_index(books)


def test_maps_and_reduces_really_run_in_parallel(ray_local, books, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    job = jobs.ParallelProbe(str(scratch))
    result = run(job, [str(b) for b in books[:4]], str(tmp_path / "out"), num_reducers=2, num_workers=2,
                 speculation=False)  # a losing backup's file would stay behind
    out = dict(result.read())
    assert int(out["~map-parallel"]) >= 2, out["~map-parallel"]
    assert max(int(v) for k, v in out.items() if k.startswith("~reduce-parallel")) >= 2
    assert sorted(os.listdir(scratch)) == ["ok-map", "ok-reduce"]  # every task's file was removed


def test_completion_is_never_reported_before_the_output_is_committed(ray_local, books, tmp_path):
    out = tmp_path / "out"
    snapshots: list[set[str]] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if out.exists():
                snapshots.append(set(os.listdir(out)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run(wordcount.WordCount, [str(b) for b in books], str(out), num_reducers=4)
        listing = set(os.listdir(out))
    finally:
        stop.set()
        watcher.join()
    parts = {f"part-r-{i:05d}" for i in range(4)}
    assert listing == parts | {"_SUCCESS"}  # everything there when run() returns, no _temporary left
    assert result.status == "succeeded"
    for snap in snapshots:
        if "_SUCCESS" in snap:
            assert parts <= snap and "_temporary" not in snap


@pytest.mark.parametrize("job", ["WordCount", "WordCountFast"])
def test_idle_workers_take_over_the_remainder_of_a_long_split(ray_local, books, tmp_path, job):
    """Also the chunk API (``mapper_chunk``) on Ray: the same claims, combiner and counters."""
    big = tmp_path / "big.txt"
    big.write_text("".join(b.read_text() for b in books))
    job = wordcount.WordCount if job == "WordCount" else wordcount_fast.WordCountFast
    result = run(job, [str(big)], str(tmp_path / "out"), num_workers=2,
                 split_bytes=big.stat().st_size, chunk_bytes=64 * 1024)
    assert result.map_tasks > 1  # one planned split, cut while running
    assert sorted(result.read()) == ref_wordcount([big])
    workers = {t["worker"] for t in result.timeline if t["kind"] == "map"}
    assert workers == {0, 1}
    assert result.counters["mixfleet"]["map_input_records"] == len(big.read_text().split("\n")) - 1


def test_reduce_spills_past_its_memory_budget_and_output_is_unchanged(ray_local, books, tmp_path):
    result = run(wordcount.WordCount, [str(b) for b in books], str(tmp_path / "out"), num_reducers=2,
                 reduce_memory_bytes=20_000, split_bytes=200_000)
    assert result.counters["mixfleet"]["spilled_runs"] > 2
    assert sorted(result.read()) == ref_wordcount(books)


def test_multi_step_job(ray_local, books, tmp_path):
    result = run(jobs.TwoStep, [str(b) for b in books[:3]], str(tmp_path / "out"), output_format="jsonl")
    words = Counter(w.lower() for line in _lines(books[:3]) for w in WORD.findall(line))
    expect = Counter()
    for w, c in words.items():
        expect[len(w)] += c
    assert dict(result.read()) == dict(expect)


def test_user_counters_and_hot_keys(ray_local, books, tmp_path):
    result = run(jobs.Counting, [str(books[0])], str(tmp_path / "out"))
    lines = books[0].read_text().split("\n")
    lines = lines[:-1] if lines[-1] == "" else lines
    assert result.counters["lines"] == {"seen": len(lines), "blank": sum(1 for ln in lines if not ln.strip())}
    assert dict(result.read()) == {"lines": str(len(lines))}
    assert result.counters["skew"]["hot_key:lines"] >= len(lines) * 0.9  # one key gets everything
