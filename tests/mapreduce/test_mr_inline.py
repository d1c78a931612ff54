"""The inline runner (no Ray), the chunk API and the pair-shape errors; all without Ray."""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from mixfleet.errors import JobError
from mixfleet.mapreduce import run

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples" / "mapreduce"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


jobs = _load(HERE / "mr_testjobs.py", "mr_testjobs_inline")
wordcount = _load(EXAMPLES / "wordcount.py", "mr_inline_wordcount")
fast = _load(EXAMPLES / "wordcount_fast.py", "mr_inline_wordcount_fast")


@pytest.fixture(scope="module")
def books(data_dir):
    return sorted((data_dir / "gutenberg").glob("pg-*.txt"))[:3]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Any attempt to start or join Ray fails these tests."""
    import mixfleet.platform.bootstrap as bootstrap

    def refuse(*_a, **_k):
        raise AssertionError("the inline runner must not connect to Ray")

    monkeypatch.setattr(bootstrap, "connect", refuse)


def reference(paths) -> dict[str, str]:
    return {w: str(c) for w, c in Counter(w for p in paths for w in re.findall(r"[A-Za-z]+", p.read_text())).items()}


@pytest.mark.parametrize("example", [wordcount.WordCount, fast.WordCountFast])
def test_inline_runs_the_same_job_with_two_maps_and_two_reduces(books, tmp_path, example):
    out = tmp_path / "out"
    result = run(example, [str(b) for b in books], str(out), runner="inline")
    assert dict(result.read()) == reference(books)
    assert result.map_tasks >= 2 and result.reduce_tasks >= 2
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [f"part-r-{i:05d}" for i in range(result.reduce_tasks)]
    c = result.counters["mixfleet"]
    assert c["map_input_records"] == sum(len(b.read_text().split("\n")) - 1 for b in books)
    if example is wordcount.WordCount:
        assert c["reduce_input_records"] < c["map_output_records"] / 5  # the combiner ran map-side


def test_chunk_api_counts_the_same_words_as_the_per_line_mapper_from_one_map(data_dir, tmp_path):
    book = data_dir / "gutenberg" / "pg-metamorphosis.txt"
    a = run(wordcount.WordCount, [str(book)], str(tmp_path / "a"), runner="inline", split_bytes=10 << 20)
    b = run(fast.WordCountFast, [str(book)], str(tmp_path / "b"), runner="inline", chunk_bytes=4096)
    assert dict(a.read()) == dict(b.read()) == reference([book])
    assert a.counters["mixfleet"]["map_input_records"] == b.counters["mixfleet"]["map_input_records"]


def test_inline_runs_maps_in_a_shuffled_order(books, tmp_path):
    orders = []
    for seed in range(4):
        result = run(jobs.MapOrder, [str(b) for b in books], str(tmp_path / f"o{seed}"), runner="inline",
                     num_reducers=2, seed=seed)
        [ids] = [v for k, v in result.read() if k == "order"]
        orders.append(ids.split(","))
    assert all(sorted(o) == sorted(orders[0]) and len(o) >= 2 for o in orders)
    assert any(o != sorted(o) for o in orders)  # the seeds give different, unsorted orders


def test_inline_multi_step_job(books, tmp_path):
    result = run(jobs.TwoStep, [str(b) for b in books], str(tmp_path / "out"), runner="inline",
                 output_format="jsonl")
    expect = Counter()
    for w, c in Counter(w.lower() for b in books for w in re.findall(r"[A-Za-z]+", b.read_text())).items():
        expect[len(w)] += c
    assert dict(result.read()) == dict(expect)


def test_a_reducer_that_yields_no_pair_names_the_users_file_and_line(books, tmp_path):
    with pytest.raises(JobError) as err:
        run(jobs.BadPairs, [str(books[0])], str(tmp_path / "out"), runner="inline")
    line = next(i for i, text in enumerate((HERE / "mr_testjobs.py").read_text().splitlines(), 1)
                if "BAD-PAIR-LINE" in text)
    msg = str(err.value)
    assert msg.startswith("reducer of BadPairs must yield (key, value) pairs; got 'lines=")
    assert f"mr_testjobs.py:{line}" in msg and "\n" not in msg
    left = os.listdir(tmp_path / "out") if (tmp_path / "out").exists() else []
    assert "_temporary" not in left and "_SUCCESS" not in left and not [n for n in left if n.startswith("part-")]
    assert not list(tmp_path.glob(".out*"))  # no staging folder either


def test_a_mapper_that_returns_a_non_iterable_is_named(books, tmp_path):
    with pytest.raises(JobError, match=r"^mapper of NotIterableMapper must yield \(key, value\) pairs; got \d+ \(int\)"):
        run(jobs.NotIterableMapper, [str(books[0])], str(tmp_path / "out"), runner="inline")


def test_range_partitioner_samples_a_mapper_that_emits_only_in_mapper_final(books, tmp_path):
    """``wordcount_fast`` combines in the mapper and emits in ``mapper_final``: the range
    sample must run the init/final hooks, or it sees no key (and crashes on ``self.counts``)."""
    result = run(fast.WordCountFast, [str(b) for b in books], str(tmp_path / "r"), runner="inline",
                 partitioner="range", num_reducers=3, chunk_bytes=16 << 10)
    parts = [[k for k, _ in _read_part(tmp_path / "r" / f"part-r-{i:05d}")] for i in range(3)]
    assert all(parts) and all(p == sorted(p) for p in parts)
    assert parts[0][-1] < parts[1][0] and parts[1][-1] < parts[2][0]  # totally ordered
    assert dict(result.read()) == reference(books)


def _read_part(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in path.read_text().splitlines()]
