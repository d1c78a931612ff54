"""CPU binding of replicas (``cpu_bind``): the spec's syntax, its checks, and a bound process's threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mixfleet.errors import InputError
from mixfleet.platform.cpus import check_cpu_bind, cpu_set_for, parse_cpu_bind


def test_specs_name_one_set_per_replica_and_cycle():
    assert parse_cpu_bind("1") == [[1]]
    assert parse_cpu_bind("0-3,6") == [[0, 1, 2, 3, 6]]
    assert parse_cpu_bind("0-1|2-3") == [[0, 1], [2, 3]]
    assert [cpu_set_for("0-1|2-3", k) for k in range(3)] == [[0, 1], [2, 3], [0, 1]]


@pytest.mark.parametrize("bad, why", [("a", "bad CPU id"), ("3-1", "runs backwards"), ("1|", "bad CPU id"),
                                      ("1,", "bad CPU id"), ("-1", "bad CPU id")])
def test_a_bad_spec_is_one_line_naming_it(bad, why):
    with pytest.raises(InputError) as e:
        parse_cpu_bind(bad)
    assert f"'{bad}'" in str(e.value) and why in str(e.value) and "\n" not in str(e.value)


def test_a_cpu_this_machine_lacks_is_refused():
    top = max(os.sched_getaffinity(0))
    with pytest.raises(InputError, match=f"names CPU\\(s\\) {top + 64}"):
        check_cpu_bind(f"0|{top + 64}")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_binding_covers_threads_started_before_and_after():
    """In a child process (binding pytest's own process would bind what it starts later)."""
    code = textwrap.dedent("""
        import json, os, threading
        from mixfleet.platform.cpus import bind_process, process_cpus
        stop = threading.Event()
        seen = {}
        def early():
            stop.wait()
            seen["early"] = sorted(os.sched_getaffinity(0))
        t = threading.Thread(target=early); t.start()
        before = bind_process([1])
        late = threading.Thread(target=lambda: seen.update(late=sorted(os.sched_getaffinity(0)))); late.start()
        late.join(); stop.set(); t.join()
        print(json.dumps({"before": before, "seen": seen, "process": process_cpus()}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    import json

    got = json.loads(out.stdout)
    assert len(got["before"]) > 1
    assert got["seen"] == {"early": [1], "late": [1]} and got["process"] == [1]


def test_cpu_seconds_by_role_counts_a_process_by_its_command_line():
    """A child that burns 0.3 s of CPU shows up under the role its command line names, and in the host total."""
    from mixfleet.platform.cpus import cores_used, cpu_seconds_by_role

    roles = (("mixfleet-cpu-probe", "", "probe"),)
    code = ("import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
            "print('ok', flush=True)\nsys.stdin.read()")
    before = cpu_seconds_by_role(roles)
    child = subprocess.Popen([sys.executable, "-c", code, "mixfleet-cpu-probe"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ok"
        after = cpu_seconds_by_role(roles)
    finally:
        child.stdin.close()
        child.wait(10)
    assert "probe" not in before and after["probe"] >= 0.25
    assert after["host"] - before["host"] >= 0.25 and after["this process"] >= before["this process"] > 0
    assert cores_used(before, after, 2.0)["probe"] == pytest.approx(after["probe"] / 2.0)
