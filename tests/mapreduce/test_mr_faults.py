"""Fault tolerance: the lab's crash test, silent workers, job count, master kill, durable resume."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mixfleet.mapreduce import run
from mixfleet.mapreduce.speculation import Running, choose_backup, slow_workers, time_left

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
spec = importlib.util.spec_from_file_location("mr_testjobs_faults", HERE / "mr_testjobs.py")
jobs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jobs)


@pytest.fixture(scope="module")
def books(data_dir):
    return sorted((data_dir / "gutenberg").glob("pg-*.txt"))


def reference(paths) -> dict[str, str]:
    counts = Counter(w for p in paths for w in re.findall(r"[A-Za-z]+", p.read_text()))
    return {w: str(c) for w, c in counts.items()}


# --- the LATE policy, without Ray ------------------------------------------------------
POLICY = dict(threshold=0.75, cap=0.1, floor_s=10.0, slow_ratio=0.5)


def test_late_backs_up_the_longest_time_left_on_a_fast_idle_worker():
    running = [Running("a", 30, 0.9, 1, 0), Running("b", 30, 0.2, 1, 1), Running("c", 12, 0.5, 1, 2)]
    assert time_left(running[1]) > time_left(running[2]) > time_left(running[0])
    assert choose_backup(running, done=12, total=15, idle=[3], rates={}, **POLICY) == ("b", 3)


def test_late_respects_threshold_floor_cap_and_slow_hosts():
    young = [Running("a", 9.9, 0.1, 1, 0)]
    assert choose_backup(young, done=9, total=10, idle=[1], rates={}, **POLICY) is None  # floor
    old = [Running("a", 20, 0.1, 1, 0)]
    assert choose_backup(old, done=7, total=10, idle=[1], rates={}, **POLICY) is None  # < 75% done
    assert choose_backup(old, done=8, total=10, idle=[1], rates={}, **POLICY) == ("a", 1)
    backed = [Running("a", 20, 0.1, 2, 0), Running("b", 20, 0.1, 1, 1)]
    assert choose_backup(backed, done=18, total=20, idle=[2], rates={}, **POLICY) is None  # cap: 1 of 2
    rates = {0: 100.0, 1: 100.0, 2: 10.0}
    assert slow_workers(rates, 0.5) == {2}
    assert choose_backup(old, done=9, total=10, idle=[2], rates=rates, **POLICY) is None  # slow host


# --- the lab's crash test ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crash_test_output_equals_crash_free_reference(ray_local, books, tmp_path, seed):
    inputs = books[:3]
    result = run(jobs.Crashy(seed=seed, max_sleep_s=10.0), [str(b) for b in inputs], str(tmp_path / "out"),
                 num_reducers=2, split_bytes=400_000, max_attempts=12, speculation_floor_s=1.0,
                 heartbeat_s=0.5)
    assert dict(result.read()) == reference(inputs)
    assert sorted(os.listdir(tmp_path / "out")) == ["_SUCCESS", "part-r-00000", "part-r-00001"]
    c = result.counters["mixfleet"]
    # counters come from winning attempts only, however many attempts died or lost
    assert c["map_input_records"] == sum(len(b.read_text().split("\n")) - 1 for b in inputs)
    assert result.attempts["failed"] + result.counters["speculation"]["backups_launched"] >= 1


def test_a_silent_worker_is_presumed_lost_and_its_task_reassigned(ray_local, books, tmp_path):
    inputs = books[:2]
    t0 = time.monotonic()
    result = run(jobs.Hang, [str(b) for b in inputs], str(tmp_path / "out"), num_reducers=2,
                 heartbeat_timeout_s=2.0, heartbeat_s=0.3, speculation=False)
    assert dict(result.read()) == reference(inputs)
    spec_counters = result.counters["speculation"]
    assert spec_counters["presumed_lost"] == 1 and spec_counters["workers_replaced"] >= 1
    assert time.monotonic() - t0 < 60


def test_job_count_every_map_runs_exactly_once_without_failures(ray_local, books, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:2]
    result = run(jobs.Counted(str(scratch), (2.0, 3.0)), [str(b) for b in inputs], str(tmp_path / "out"),
                 num_reducers=2, split_bytes=200_000, steal=False)  # speculation on, default 10 s floor
    assert dict(result.read()) == reference(inputs)
    attempts = os.listdir(scratch)
    assert len(attempts) == result.map_tasks >= 2
    assert {a.split(".a")[0] for a in attempts} == {f"s0-m-{i:05d}" for i in range(result.map_tasks)}
    assert result.attempts["speculative"] == 0  # no task outlived the 10 s floor


# --- master kill and durable resume --------------------------------------------------------
def test_master_killed_mid_reduce_resumes_without_rerunning_maps(ray_local, books, tmp_path):
    import ray

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:4]
    box: dict = {}

    def go():
        try:
            box["result"] = run(jobs.SlowReduce(str(scratch), hold_s=2.0), [str(b) for b in inputs],
                                str(tmp_path / "out"), num_reducers=2, checkpoint=str(tmp_path / "ckpt"))
        except Exception as exc:  # surfaced by the assertion below
            box["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.monotonic() + 120
    while not os.listdir(scratch) and time.monotonic() < deadline:
        time.sleep(0.05)
    masters = [n["name"] for n in ray.util.list_named_actors(all_namespaces=True)
               if n["name"].startswith("mixfleet-mapreduce-master-") and n["name"].endswith("-0")]
    assert len(masters) == 1
    ray.kill(ray.get_actor(masters[0], namespace="mixfleet"))
    thread.join(timeout=180)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert dict(result.read()) == reference(inputs)
    c = result.counters["mixfleet"]
    assert c["master_restarts"] == 1
    assert c["maps_restored"] == result.map_tasks and c["map_attempts"] == result.map_tasks  # no map re-ran
    assert len([n for n in os.listdir(scratch) if n.startswith("reduce-")]) >= 3  # reduces ran again


def test_durable_resume_after_the_whole_ray_is_shut_down(books, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:3]
    cmd = [sys.executable, "-m", "mixfleet", "mapreduce", "run", str(HERE / "mr_testjobs.py") + ":SlowReduce",
           *[a for b in inputs for a in ("--input", str(b))], "--output", str(tmp_path / "out"),
           "--reducers", "2", "--checkpoint", str(tmp_path / "ckpt"), "--durable-shuffle", "--json"]
    env = {**os.environ, "MIXFLEET_TEST_SCRATCH": str(scratch)}
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 150
    while not os.listdir(scratch) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert os.listdir(scratch), "the first run never reached its reduce phase"
    first.send_signal(signal.SIGINT)  # the driver exits and takes its embedded Ray down with it
    _, err = first.communicate(timeout=60)
    assert first.returncode != 0, err
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert list((tmp_path / "ckpt" / "shuffle").iterdir())  # map outputs spilled durably

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr
    import json

    obj = json.loads(second.stdout)
    got = {}
    for part in sorted((tmp_path / "out").glob("part-r-*")):
        got.update(line.split("\t") for line in part.read_text().splitlines())
    assert got == reference(inputs)
    c = obj["counters"]["mixfleet"]
    assert c["maps_restored"] == obj["map_tasks"] and c["map_attempts"] == obj["map_tasks"]
