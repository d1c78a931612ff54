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


# --- the speculation policy, without Ray ----------------------------------------------------
POLICY = dict(threshold=0.75, multiplier=1.5, cap=0.1, floor_s=0.1, slow_ratio=0.5)


def test_backs_up_the_longest_time_left_among_stragglers_on_a_fast_idle_worker():
    running = [Running("a", 30, 0.9, 1, 0), Running("b", 30, 0.2, 1, 1), Running("c", 12, 0.5, 1, 2)]
    assert time_left(running[1]) > time_left(running[2]) > time_left(running[0])
    durations = [2.0] * 12
    assert choose_backup(running, durations, 12, 15, [3], {}, **POLICY) == ("b", 3)


def test_the_trigger_follows_the_phases_own_task_times():
    done = [2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0, 2.0]  # median 2.0 s: stragglers are older than 3.0 s
    assert choose_backup([Running("a", 2.9, 0.5, 1, 0)], done, 8, 9, [1], {}, **POLICY) is None
    assert choose_backup([Running("a", 3.1, 0.5, 1, 0)], done, 8, 9, [1], {}, **POLICY) == ("a", 1)
    fast = [0.01] * 8  # tiny tasks: the 100 ms floor holds
    assert choose_backup([Running("a", 0.05, 0.5, 1, 0)], fast, 8, 9, [1], {}, **POLICY) is None
    assert choose_backup([Running("a", 0.15, 0.5, 1, 0)], fast, 8, 9, [1], {}, **POLICY) == ("a", 1)
    assert choose_backup([Running("a", 99, 0.5, 1, 0)], [], 8, 9, [1], {}, **POLICY) is None  # restored only


def test_threshold_cap_and_slow_hosts():
    old = [Running("a", 20, 0.1, 1, 0)]
    assert choose_backup(old, [1.0] * 6, 6, 10, [1], {}, **POLICY) is None  # 6 < floor(0.75 * 10) done
    assert choose_backup(old, [1.0] * 7, 7, 10, [1], {}, **POLICY) == ("a", 1)
    assert choose_backup(old, [1.0], 1, 2, [1], {}, **POLICY) == ("a", 1)  # two reduces: one done is enough
    backed = [Running("a", 20, 0.1, 2, 0), Running("b", 20, 0.1, 1, 1)]
    assert choose_backup(backed, [1.0] * 18, 18, 20, [2], {}, **POLICY) is None  # cap: 1 of 2
    rates = {0: 100.0, 1: 100.0, 2: 10.0}
    assert slow_workers(rates, 0.5) == {2}
    assert choose_backup(old, [1.0] * 9, 9, 10, [2], rates, **POLICY) is None  # slow host


def test_no_backup_that_would_finish_after_the_original():
    """Hadoop's rule: a straggler nearly done is left alone; one far from done is backed up."""
    rates = {0: 1.6e6, 1: 16e6}
    nearly = Running("a", 30, 0.98, 1, 0, size=48_000_000)  # ~0.6 s left; a backup needs 3 s
    far = Running("a", 30, 0.5, 1, 0, size=48_000_000)  # 30 s left
    assert choose_backup([nearly], [4.0] * 7, 7, 8, [1], rates, **POLICY) is None
    assert choose_backup([far], [4.0] * 7, 7, 8, [1], rates, **POLICY) == ("a", 1)
    # without a size the backup is expected to take the phase's median task time
    assert choose_backup([Running("a", 30, 0.95, 1, 0)], [4.0] * 7, 7, 8, [1], rates, **POLICY) is None


# --- speculation end to end ---------------------------------------------------------------
@pytest.mark.parametrize("phase", ["map", "reduce"])
def test_a_backup_attempt_wins_over_a_cpu_bound_straggler_at_default_settings(ray_local, books, tmp_path, phase):
    """Worker 1 burns CPU on every attempt of ``phase`` until another attempt of its task finished
    (``Straggler``): at the default speculation settings a backup on worker 0 must win.
    After the map phase the reduces start while the losing maps still run (they see a reduce
    start before they stop); before, the master waited for them to stop.

    Mutation check, done by hand: with ``Master._speculate`` returning ``None`` (speculation
    removed in the code, the flag left on) this test fails: no backup is launched, the
    stragglers burn CPU for ``limit_s`` and no speculative attempt wins. With the map phase
    waiting for its losers again, no losing map sees a reduce start.
    """
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:4]
    result = run(jobs.Straggler(str(scratch), slow=1, limit_s=120.0, phases=phase), [str(b) for b in inputs],
                 str(tmp_path / "out"), num_workers=2, num_reducers=2, split_bytes=300_000, steal=False,
                 drain_grace_s=60.0)
    assert dict(result.read()) == reference(inputs)
    won = {(a["kind"], a["task"]): a for a in result.timeline if a["outcome"] == "won"}
    on_slow = {(a["kind"], a["task"]) for a in result.timeline if a["worker"] == 1 and a["kind"] == phase}
    assert on_slow  # the slow worker got work in the phase ...
    for key in on_slow:  # ... and every one of those tasks was won by a backup on the fast worker
        assert won[key]["speculative"] and won[key]["worker"] == 0, won[key]
    backups_won = [a for a in result.timeline if a["outcome"] == "won" and a["speculative"] and a["kind"] == phase]
    assert len(backups_won) == len(on_slow) <= result.counters["speculation"]["backups_won"]
    if phase == "map":
        assert {p.name for p in scratch.glob("saw-reduce-*")} == {f"saw-reduce-{t}" for _, t in on_slow}


# --- the lab's crash test ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crash_test_output_equals_crash_free_reference(ray_local, books, tmp_path, seed):
    inputs = books[:3]
    result = run(jobs.Crashy(seed=seed, max_sleep_s=10.0), [str(b) for b in inputs], str(tmp_path / "out"),
                 num_reducers=2, split_bytes=400_000, max_attempts=12,
                 heartbeat_s=0.5)
    assert dict(result.read()) == reference(inputs)
    assert sorted(os.listdir(tmp_path / "out")) == ["_SUCCESS", "part-r-00000", "part-r-00001"]
    c = result.counters["mixfleet"]
    # counters come from winning attempts only, however many attempts died or lost
    assert c["map_input_records"] == sum(len(b.read_text().split("\n")) - 1 for b in inputs)
    assert result.attempts["failed"] + result.counters["speculation"]["backups_launched"] >= 1


def test_a_silent_worker_is_presumed_lost_and_its_task_reassigned(ray_local, books, tmp_path):
    inputs = books[:2]
    result = run(jobs.Hang, [str(b) for b in inputs], str(tmp_path / "out"), num_reducers=2,
                 heartbeat_timeout_s=2.0, heartbeat_s=0.3, speculation=False)
    assert dict(result.read()) == reference(inputs)
    spec_counters = result.counters["speculation"]
    assert spec_counters["presumed_lost"] == 1 and spec_counters["workers_replaced"] >= 1


def test_job_count_every_map_runs_exactly_once_without_failures(ray_local, books, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:2]
    result = run(jobs.Counted(str(scratch), (2.0, 3.0)), [str(b) for b in inputs], str(tmp_path / "out"),
                 num_reducers=2, split_bytes=200_000, steal=False, speculation=False)
    assert dict(result.read()) == reference(inputs)
    attempts = os.listdir(scratch)
    assert len(attempts) == result.map_tasks >= 2
    assert {a.split(".a")[0] for a in attempts} == {f"s0-m-{i:05d}" for i in range(result.map_tasks)}
    assert result.attempts["speculative"] == 0


# --- master kill, interrupts and durable resume --------------------------------------------
def _announced(scratch: Path, kind: str) -> list[Path]:
    return [p for p in scratch.iterdir() if p.name.startswith(kind + "-")]


def _wait_announced(scratch: Path, kind: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 150
    while not _announced(scratch, kind) and time.monotonic() < deadline and (proc is None or proc.poll() is None):
        time.sleep(0.05)
    assert _announced(scratch, kind), f"no {kind} task ever started"


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc; elsewhere: it exists)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _assert_processes_gone(scratch: Path) -> None:
    """Every task process that announced itself has exited."""
    pids = {int(p.name.split("-")[-2]) for p in scratch.iterdir() if p.name.startswith(("map-", "reduce-"))}
    assert pids
    deadline = time.monotonic() + 60
    while (alive := {pid for pid in pids if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"worker processes {sorted(alive)} outlived the interrupted driver"


def _cli(job: str, inputs, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mixfleet", "mapreduce", "run", str(HERE / "mr_testjobs.py") + ":" + job,
            *[a for b in inputs for a in ("--input", str(b))], "--output", str(out), "--reducers", "2",
            *extra, "--json"]


def _env(scratch: Path) -> dict:
    env = {**os.environ, "MIXFLEET_TEST_SCRATCH": str(scratch)}
    env.pop("RAY_ADDRESS", None)
    return env


# NO_BACKUPS: the resume tests count map attempts (every map ran once, then was restored, never re-run).
# On a loaded machine one map can run 1.5x the phase's median and get a speculative backup, an extra
# attempt that has nothing to do with the resume: that made the count depend on machine load (one failure
# in a full suite run, 2026-12-04). Speculation is tested on its own above; these tests turn it off.


def test_master_killed_mid_reduce_resumes_without_rerunning_maps(ray_local, books, tmp_path):
    import ray

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:4]
    box: dict = {}

    def go():
        try:
            box["result"] = run(jobs.SlowReduce(str(scratch)), [str(b) for b in inputs],
                                str(tmp_path / "out"), num_reducers=2, checkpoint=str(tmp_path / "ckpt"),
                                speculation=False)  # see NO_BACKUPS
        except Exception as exc:  # surfaced by the assertion below
            box["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    _wait_announced(scratch, "reduce")  # the reducers wait for scratch/go: the job can't finish yet
    masters = [n["name"] for n in ray.util.list_named_actors(all_namespaces=True)
               if n["name"].startswith("mixfleet-mapreduce-master-") and n["name"].endswith("-0")]
    assert len(masters) == 1
    ray.kill(ray.get_actor(masters[0], namespace="mixfleet"))
    (scratch / "go").touch()
    thread.join(timeout=180)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert dict(result.read()) == reference(inputs)
    c = result.counters["mixfleet"]
    assert c["master_restarts"] == 1
    assert c["maps_restored"] == result.map_tasks and c["map_attempts"] == result.map_tasks  # no map re-ran
    assert len(_announced(scratch, "reduce")) >= 3  # reduces ran again


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_mid_map_stops_the_job_with_its_exit_code(books, tmp_path, sig, code):
    """Ctrl-C / SIGTERM while maps run: 130 / 143, one error line, no output left, no worker left."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli("GatedMap", books[:2], out), cwd=REPO, env=_env(scratch),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_announced(scratch, "map", proc)  # the maps wait for scratch/go, which never comes
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert [ln for ln in err.splitlines() if ln.startswith("error: ")] == ["error: interrupted"]
    assert stdout == ""
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # no output folder, no staging left
    _assert_processes_gone(scratch)


def test_durable_resume_after_the_whole_ray_is_shut_down(books, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    inputs = books[:3]
    cmd = _cli("SlowReduce", inputs, tmp_path / "out", "--checkpoint", str(tmp_path / "ckpt"), "--durable-shuffle",
               "--no-speculation")  # see NO_BACKUPS
    first = subprocess.Popen(cmd, cwd=REPO, env=_env(scratch), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    _wait_announced(scratch, "reduce", first)  # every map is done; the reducers wait for scratch/go
    first.send_signal(signal.SIGINT)  # the driver stops the job and its embedded Ray
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert err.splitlines()[-1] == "error: interrupted"
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    _assert_processes_gone(scratch)
    import json

    saved = json.loads((tmp_path / "ckpt" / "mapreduce-checkpoint.json").read_text())  # consistent JSON
    assert all(t["state"] == "done" for t in saved["steps"]["0"]["maps"])
    assert list((tmp_path / "ckpt" / "shuffle").iterdir())  # map outputs spilled durably

    (scratch / "go").touch()
    second = subprocess.run(cmd, cwd=REPO, env=_env(scratch), capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr
    obj = json.loads(second.stdout)
    got = {}
    for part in sorted((tmp_path / "out").glob("part-r-*")):
        got.update(line.split("\t") for line in part.read_text().splitlines())
    assert got == reference(inputs)
    c = obj["counters"]["mixfleet"]
    assert c["maps_restored"] == obj["map_tasks"] and c["map_attempts"] == obj["map_tasks"]
