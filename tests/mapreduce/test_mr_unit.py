"""Unit tests of the MapReduce core (no Ray): splits, hashing, shuffle, task table."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from mixfleet.errors import InputError, JobError
from mixfleet.mapreduce import RunConfig
from mixfleet.mapreduce.inputs import Piece, plan_splits, resolve_inputs
from mixfleet.mapreduce.keys import hash_partition, hash_partitioner, range_boundaries, range_partitioner
from mixfleet.mapreduce.outputs import encode_part
from mixfleet.mapreduce.records import iter_lines
from mixfleet.mapreduce.shuffle import ReduceMerger, encode_block
from mixfleet.mapreduce.tasks import State, Task, TaskTable


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_any_cut_points_read_every_line_once(tmp_path):
    rng = random.Random(1)
    lines = ["".join(rng.choice("ab \t") for _ in range(rng.randrange(0, 40))) for _ in range(500)]
    path = _write(tmp_path, "f.txt", "\n".join(lines) + "\n")
    [entry] = resolve_inputs([str(path)], RunConfig())
    size = path.stat().st_size
    for trial in range(20):
        cuts = sorted({0, size, *(rng.randrange(size) for _ in range(rng.randrange(1, 12)))})
        got = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            for _, batch in iter_lines(entry, Piece(0, a, b), chunk=rng.randrange(1, 300)):
                got += batch
        assert got == lines, f"trial {trial} cuts {cuts}"


def test_claims_that_shrink_the_end_hand_the_rest_to_another_reader(tmp_path):
    lines = [f"line {i:04d}" for i in range(1000)]
    path = _write(tmp_path, "f.txt", "\n".join(lines))  # no final newline
    [entry] = resolve_inputs([str(path)], RunConfig())
    end = {"v": path.stat().st_size}

    def claim(pos, want):
        if pos > 3000 and end["v"] > 5000:
            end["v"] = 5000  # the master cut the split at byte 5000
        return min(want, end["v"]), end["v"]

    first = [ln for _, b in iter_lines(entry, Piece(0, 0, path.stat().st_size), 512, claim) for ln in b]
    rest = [ln for _, b in iter_lines(entry, Piece(0, 5000, path.stat().st_size), 512) for ln in b]
    assert first + rest == lines
    assert 0 < len(rest) < len(lines)


def test_small_files_coalesce_and_big_files_split(tmp_path):
    for i in range(10):
        _write(tmp_path, f"small{i}.txt", "x" * 999 + "\n")
    _write(tmp_path, "big.txt", ("y" * 99 + "\n") * 1000)
    files = resolve_inputs([str(tmp_path)], RunConfig())
    splits = plan_splits(files, workers=2, cfg=RunConfig(split_bytes=10_000))
    sizes = [sum(p.size for p in s) for s in splits]
    assert sum(sizes) == 10 * 1000 + 100_000
    assert max(sizes) <= 10_000
    assert any(len(s) > 1 for s in splits)  # small files share a split
    assert sum(1 for s in splits for p in s if files[p.file].path.endswith("big.txt")) == 10


def test_hidden_files_in_folders_are_skipped(tmp_path):
    _write(tmp_path, "a.txt", "a\n")
    _write(tmp_path, "_SUCCESS", "")
    _write(tmp_path, ".crc", "x")
    assert [os.path.basename(f.path) for f in resolve_inputs([str(tmp_path)], RunConfig())] == ["a.txt"]


def test_stable_hash_is_the_same_in_another_process():
    keys = ["the", "Gregor", "", "ünïcode", 7, 2.5, ("a", 1)]
    here = [hash_partition(k, 13) for k in keys]
    code = ("from mixfleet.mapreduce.keys import hash_partition as h;"
            f"print([h(k, 13) for k in {keys!r}])")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == str(here)
    assert hash_partition(1, 13) == hash_partition(1.0, 13) == hash_partition(True, 13)
    part = hash_partitioner(13)
    assert [part(k) for k in keys] == here


def test_range_partitioner_keeps_key_order():
    rng = random.Random(3)
    sample = [rng.random() for _ in range(1000)]
    bounds = range_boundaries(sample, 4)
    part = range_partitioner(bounds)
    keys = sorted(rng.random() for _ in range(1000))
    parts = [part(k) for k in keys]
    assert parts == sorted(parts) and set(parts) == {0, 1, 2, 3}


def test_reduce_merger_spills_and_merges_in_key_order():
    blocks = [encode_block({f"k{i % 50:03d}": [i]}, "t") for i in range(500)]
    small = ReduceMerger(budget_bytes=2000)
    for b in blocks:
        small.add(b)
    assert small.spilled_runs > 3
    spilled = [(k, sorted(v)) for k, v in small.items()]
    big = ReduceMerger(budget_bytes=1 << 30)
    for b in blocks:
        big.add(b)
    assert big.spilled_runs == 0
    assert spilled == [(k, sorted(v)) for k, v in big.items()]
    assert [k for k, _ in spilled] == sorted(f"k{i:03d}" for i in range(50))


def test_unserialisable_value_is_named():
    import threading

    with pytest.raises(JobError, match=r"task m-1: value .*lock.* \(type lock\) for key 'x' can't be serialised"):
        encode_block({"ok": [1], "x": [threading.Lock()]}, "m-1")


def test_output_formats_follow_the_contract():
    data, n = encode_part([("a b", 1), (("t", 2), {"v": [1]}), ("s", "plain")], "text")
    assert n == 3
    assert data.decode() == 'a b\t1\n["t", 2]\t{"v": [1]}\ns\tplain\n'
    with pytest.raises(JobError, match="type set"):
        encode_part([("k", {1})], "text")


def test_task_table_state_machine():
    table = TaskTable(clock=iter(range(100)).__next__)
    task = table.add(Task("m-0", "map", 0))
    a1 = table.start(task, worker=0)
    assert task.state is State.RUNNING
    assert table.lose(task, a1, max_attempts=2) and task.state is State.PENDING
    a2 = table.start(task, worker=1)
    backup = table.start(task, worker=0, speculative=True)
    assert table.finish(task, a2, "r") and task.state is State.DONE
    assert backup.outcome == "cancelled" and not table.finish(task, backup, "late")
    assert task.result == "r"
    assert (table.launched, table.failed_attempts, table.speculative) == (3, 1, 1)
    with pytest.raises(AssertionError, match="illegal move"):
        task.move(State.RUNNING)


def test_run_config_rejects_unknown_options_with_a_suggestion():
    with pytest.raises(InputError, match="did you mean 'overwrite'"):
        RunConfig.from_kwargs(overwrit=True)
    with pytest.raises(InputError, match="unknown output format 'csv'"):
        RunConfig(output_format="csv")
    with pytest.raises(InputError, match="--reducers 0"):
        RunConfig(num_reducers=0)


def test_run_config_is_strict_and_frozen():
    with pytest.raises(InputError, match="bad value '2' for 'num_workers'"):
        RunConfig.from_kwargs(num_workers="2")  # no silent coercion
    cfg = RunConfig.from_kwargs(seed=1)
    with pytest.raises(ValueError, match="frozen"):
        cfg.seed = 2


def test_a_checkpointed_result_reads_back_without_its_object_refs():
    """What a resumed master restores: the winner's counters, files and hot keys, never a stale ref."""
    import json

    from mixfleet.mapreduce import checkpoint as ckpt
    from mixfleet.mapreduce.results import MapDone, ReduceDone

    task = Task("s0-m-00000", "map", 0, [Piece(0, 0, 10, nbytes=7)], state=State.DONE,
                result=MapDone({"g": {"n": 1}}, "st", 10, refs=[object()], files=["f0", None], node="n1",
                               hot={("a", 1): 3}))
    saved = json.loads(json.dumps(ckpt.task_to_json(task)))
    assert [ckpt.piece_from_json(p) for p in saved["pieces"]] == task.pieces
    back = ckpt.result_from_json("map", {**saved["result"], "elapsed_s": 1.0})  # an older checkpoint's extra key
    assert back == MapDone({"g": {"n": 1}}, "st", 10, refs=None, files=["f0", None], node="n1", hot={"('a', 1)": 3})
    reduce = Task("s0-r-00000", "reduce", 0, state=State.DONE, result=ReduceDone({}, "", 2, 5, "p.a1", object()))
    assert ckpt.result_from_json("reduce", json.loads(json.dumps(ckpt.task_to_json(reduce)))["result"]) == \
        ReduceDone({}, "", 2, 5, "p.a1")
    assert ckpt.task_to_json(Task("s0-m-00001", "map", 1))["result"] is None


# --- dynamic splitting by rate (pure: no Ray) ------------------------------------------------
MB = 1_000_000


def _running_map(table: TaskTable, size: int, claimed_to: int) -> Task:
    from types import SimpleNamespace

    task = table.add(Task("m0", "map", 0, [Piece(0, 0, size)], size=size))
    table.start(task, worker=0)
    task.claimed[0] = claimed_to
    return task, [SimpleNamespace(fmt="text")]


def test_a_cut_gives_each_side_a_share_by_its_rate():
    from mixfleet.mapreduce.splitting import steal

    table = TaskTable()
    task, files = _running_map(table, 64 * MB, 44 * MB)  # 20 MB unclaimed
    tasks = [task]
    tail = steal(table, tasks, files, 4 * MB, rate_of=lambda t: 1.6 * MB, thief_rate=16 * MB)
    assert tail is not None and tail.pieces[0].end == 64 * MB
    assert abs(tail.size - 20 * MB * 10 / 11) < 2  # 10x the victim's rate: ten elevenths to the thief
    assert task.size + tail.size == 64 * MB and task.pieces[0].end == tail.pieces[0].start

    table = TaskTable()
    task, files = _running_map(table, 64 * MB, 44 * MB)
    tail = steal(table, [task], files, 4 * MB, rate_of=lambda t: 16 * MB, thief_rate=16 * MB)
    assert tail.size == 10 * MB  # equal rates (or none known): half each


def test_a_slow_victim_is_cut_for_less_than_a_chunk_and_a_fast_one_is_not():
    from mixfleet.mapreduce.splitting import steal

    table = TaskTable()
    task, files = _running_map(table, 64 * MB, 61 * MB)  # 3 MB unclaimed, under one 4 MB chunk
    assert steal(table, [task], files, 4 * MB, rate_of=lambda t: 16 * MB, thief_rate=16 * MB) is None
    tail = steal(table, [task], files, 4 * MB, rate_of=lambda t: 1.6 * MB, thief_rate=16 * MB)
    assert tail is not None and tail.size > 2.5 * MB  # the victim would need ~1.7 s for it


def test_claims_are_capped_at_what_the_attempt_reads_in_claim_s():
    from mixfleet.mapreduce.splitting import MIN_CLAIM, Claims

    claims = Claims(claim_s=0.5)
    key = ("m0", 1)
    assert claims.rate(key, 1.0) is None
    assert claims.grant(key, 4 * MB, now=0.0) == 4 * MB  # the first claim: no rate yet, not capped
    assert claims.read(key) == 0 and claims.rate(key, 5.0) == pytest.approx(0.8 * MB)  # at most: not read yet
    assert claims.grant(key, 4 * MB, now=2.5) == int(0.8 * MB)  # the first 4 MB took 2.5 s: 1.6 MB/s
    assert claims.read(key) == 4 * MB and claims.rate(key, 2.5) == pytest.approx(1.6 * MB)
    assert claims.grant(key, 4 * MB, now=1e6) == MIN_CLAIM
    fast = ("m1", 1)
    assert claims.grant(fast, 4 * MB, now=0.0) == claims.grant(fast, 4 * MB, now=0.25) == 4 * MB  # 16 MB/s


def test_conf_pairs_are_typed_as_the_settings_expect():
    from mixfleet.mapreduce.cli import parse_conf

    conf = parse_conf(["split_bytes=1e6", "claim_s=1", "speculation_multiplier=2.5", "steal=false", "seed=7"])
    assert conf == {"split_bytes": 1_000_000, "claim_s": 1, "speculation_multiplier": 2.5, "steal": False, "seed": 7}
    cfg = RunConfig.from_kwargs(**conf)
    assert (cfg.split_bytes, cfg.claim_s, cfg.steal) == (1_000_000, 1.0, False)
