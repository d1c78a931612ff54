"""Every file in examples/mapreduce runs here; output formats and Ray Data interop."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mixfleet.mapreduce import run

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "mapreduce"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


grep = _load(EXAMPLES / "grep.py", "mr_ex_grep")
terasort = _load(EXAMPLES / "terasort.py", "mr_ex_terasort")
join = _load(EXAMPLES / "join.py", "mr_ex_join")
testjobs = _load(Path(__file__).with_name("mr_testjobs.py"), "mr_testjobs_ex")


def test_every_example_file_is_covered_here():
    covered = {"wordcount.py", "indexer.py", "grep.py", "terasort.py", "join.py",  # wordcount/indexer: test_mr_lab
               "wordcount_fast.py"}  # test_mr_lab (on Ray) and test_mr_inline
    assert {p.name for p in EXAMPLES.glob("*.py")} == covered


@pytest.fixture(scope="module")
def books(data_dir):
    return sorted((data_dir / "gutenberg").glob("pg-*.txt"))


def test_grep_counts_matches_like_a_sequential_scan(ray_local, books, tmp_path):
    pattern = r"\b[Ww]hale\w*|\bHolmes\b"
    result = run(grep.Grep(pattern), [str(b) for b in books], str(tmp_path / "out"))
    expect = Counter(m for b in books for line in b.read_text().split("\n") for m in re.findall(pattern, line))
    assert {k: int(v) for k, v in result.read()} == dict(expect)
    assert result.counters["grep"]["matches"] == sum(expect.values()) > 100


def test_terasort_is_totally_ordered_and_a_permutation(ray_local, tmp_path):
    src = tmp_path / "records.txt"
    terasort.generate(str(src), 30_000, seed=7)
    assert all(len(line) == 100 for line in src.read_bytes().splitlines(keepends=True)[:100])
    result = run(terasort.TeraSort, [str(src)], str(tmp_path / "out"), num_reducers=4, split_bytes=600_000)
    assert result.reduce_tasks == 4 and result.map_tasks >= 5
    parts = sorted(str(p) for p in (tmp_path / "out").glob("part-r-*"))
    assert len(parts) == 4
    sizes = [Path(p).stat().st_size for p in parts]
    assert min(sizes) > 0.5 * max(sizes)  # sampled boundaries balance the reducers
    report = terasort.validate(str(src), parts)
    assert report["ok"], report
    assert report["records_out"] == 30_000


def test_terasort_validator_catches_disorder_and_loss(tmp_path):
    src = tmp_path / "records.txt"
    terasort.generate(str(src), 50, seed=1)
    recs = sorted(src.read_text().splitlines())
    good = tmp_path / "part-r-00000"
    good.write_text("".join(f"{r[:10]}\t{r[10:]}\n" for r in recs))
    assert terasort.validate(str(src), [str(good)])["ok"]
    bad = tmp_path / "part-r-00001"
    bad.write_text("".join(f"{r[:10]}\t{r[10:]}\n" for r in reversed(recs[1:])))
    assert not terasort.validate(str(src), [str(bad)])["ok"]


def test_join_of_two_inputs_equals_a_dict_join(ray_local, tmp_path):
    customers, orders = join.make_inputs(str(tmp_path / "in"), customers=150, orders=1500, seed=3)
    result = run(join.Join, [customers, orders], str(tmp_path / "out"), output_format="jsonl")
    names = dict(line.split(",") for line in Path(customers).read_text().splitlines())
    expect = []
    for line in Path(orders).read_text().splitlines():
        oid, cid, amount = line.split(",")
        if cid in names:
            expect.append((cid, [names[cid], oid, float(amount)]))
    got = list(result.read())
    assert sorted(got) == sorted(expect) and len(got) < 1500  # inner join dropped unknown customers


def test_jsonl_and_parquet_inputs_and_outputs_and_to_dataset(ray_local, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"group": f"g{i % 7}", "n": i} for i in range(5000)]
    jl = tmp_path / "rows.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pqf = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pqf, row_group_size=700)
    expect = defaultdict(int)
    for r in rows:
        expect[r["group"]] += 2 * r["n"]
    for fmt in ("parquet", "jsonl", "text"):
        result = run(testjobs.Rows, [str(jl), str(pqf)], str(tmp_path / f"out-{fmt}"), output_format=fmt,
                     split_bytes=20_000)
        got = {k: int(v) for k, v in result.read()}
        assert got == dict(expect), fmt
        if fmt != "parquet":  # parquet: test_ray_dataset_in_and_out (each Dataset read costs seconds)
            ds_rows = result.to_dataset().take_all()
            assert {r["key"]: int(r["value"]) for r in ds_rows} == dict(expect), fmt
    assert result.map_tasks >= 3


def test_ray_dataset_in_and_out(ray_local, tmp_path):
    import ray.data

    ds = ray.data.range(3000).map(lambda r: {"group": f"g{r['id'] % 5}", "n": r["id"]})
    result = run(testjobs.Rows, ds.repartition(4), str(tmp_path / "out"), output_format="parquet")
    expect = defaultdict(int)
    for i in range(3000):
        expect[f"g{i % 5}"] += i
    out = result.to_dataset()
    assert {r["key"]: r["value"] for r in out.take_all()} == dict(expect)
    assert result.map_tasks == 4
