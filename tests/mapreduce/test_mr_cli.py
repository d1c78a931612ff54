"""``mixfleet mapreduce run`` as users call it: embedded Ray, --address, RAY_ADDRESS, --json."""

from __future__ import annotations

import re
from collections import Counter

import pytest

WC = "examples/mapreduce/wordcount.py:WordCount"


@pytest.fixture(scope="module")
def books(data_dir):
    return sorted((data_dir / "gutenberg").glob("pg-*.txt"))


def _expect(paths):
    return Counter(w for p in paths for w in re.findall(r"[A-Za-z]+", p.read_text()))


def _read(out):
    got = {}
    for part in sorted(out.glob("part-r-*")):
        for line in part.read_text().splitlines():
            k, v = line.split("\t")
            got[k] = int(v)
    return got


def test_json_contract_on_an_existing_cluster(cli, ray_local, books, tmp_path):
    out = tmp_path / "out"
    r = cli("mapreduce", "run", WC, "--input", str(books[0]), "--input", str(books[1]), "--output", str(out),
            "--reducers", "3", "--workers", "2", "--address", ray_local.address, "--no-speculation", "--json")
    assert r.returncode == 0, r.stderr
    obj = r.json()
    assert set(obj) == {"status", "output", "elapsed_s", "map_tasks", "reduce_tasks", "attempts", "counters"}
    assert obj["status"] == "succeeded" and obj["output"] == str(out) and obj["reduce_tasks"] == 3
    assert obj["attempts"] == {"launched": obj["map_tasks"] + 3, "failed": 0, "speculative": 0}
    assert obj["counters"]["mixfleet"]["reduce_output_records"] == len(_expect(books[:2]))
    assert _read(out) == dict(_expect(books[:2]))


def test_any_run_setting_is_a_conf_pair(cli, ray_local, books, tmp_path):
    """`-D split_bytes=...` (Hadoop's -D) reaches the runtime: smaller splits, more map tasks."""
    runs = {}
    for split in (None, 20_000):
        out = tmp_path / f"out-{split}"
        conf = ["-D", f"split_bytes={split}", "--conf", "speculation_multiplier=2.0"] if split else []
        r = cli("mapreduce", "run", WC, "--input", str(books[0]), "--output", str(out), "--workers", "2",
                "--address", ray_local.address, "--json", *conf)
        assert r.returncode == 0, r.stderr
        runs[split] = r.json()["map_tasks"]
        assert _read(out) == dict(_expect(books[:1]))
    assert runs[20_000] >= books[0].stat().st_size // 20_000 > runs[None]


def test_ray_job_submit_style_joins_ray_address(cli, ray_local, books, tmp_path):
    """`ray job submit -- mixfleet mapreduce run ...` sets RAY_ADDRESS for the entrypoint."""
    out = tmp_path / "out"
    r = cli("mapreduce", "run", WC, "--input", str(books[2]), "--output", str(out), "--json",
            env={"RAY_ADDRESS": ray_local.address})
    assert r.returncode == 0, r.stderr
    assert _read(out) == dict(_expect(books[2:3]))


def test_embedded_run_shows_progress_and_a_table(cli, books, tmp_path):
    out = tmp_path / "out"
    r = cli("mapreduce", "run", WC, "--input", str(books[3]), "--output", str(out), "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    assert re.search(r"map\s.*\d+/\d+ running \d+ pending \d+ .*MB/s", r.stderr)
    assert "reduce_output_records" in r.stderr and r.stdout == ""
    assert (out / "_SUCCESS").exists() and (out / "part-r-00000.jsonl").exists()
    r2 = cli("mapreduce", "run", WC, "--input", str(books[3]), "--output", str(out), "--overwrite",
             "--address", "127.0.0.1:1")
    assert r2.returncode != 0 and "cannot reach Ray at '127.0.0.1:1'" in r2.error_line


def test_demo_step(ray_local, tmp_path):
    from mixfleet.demo import DemoContext
    from mixfleet.mapreduce.demo import step

    out = step(DemoContext(workdir=tmp_path, json_mode=True, cluster_file="cluster.yaml"))
    assert out["books"] == 2 and out["map_tasks"] >= 2 and out["reduce_tasks"] >= 2
    assert out["top_words"][0][0] == "the" and out["top_words"][0][1] > 1000
    assert out["words"] == sum(c for c in _demo_reference(tmp_path).values())


def _demo_reference(workdir):
    return Counter(w.lower() for p in (workdir / "mapreduce-books").glob("*.txt")
                   for w in re.findall(r"[A-Za-z]+", p.read_text()))
