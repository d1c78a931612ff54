"""The telemetry hub and client API on the session's embedded Ray."""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import pytest

from mixfleet.errors import InputError

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _wait_for(predicate, timeout_s: float = 20.0):
    from mixfleet.platform.telemetry import hub_snapshot, wait_for_update

    snap = hub_snapshot()
    deadline = time.monotonic() + timeout_s
    while not predicate(snap):
        assert time.monotonic() < deadline, f"timed out; last snapshot: {snap}"
        snap = wait_for_update(snap["version"], timeout_s=1.0)
    return snap


def test_a_hub_nobody_reported_to_answers_empty_with_a_reason(ray_local):
    import ray

    from mixfleet.platform.telemetry import TelemetryHub

    hub = ray.remote(TelemetryHub).options(num_cpus=0, max_concurrency=4).remote()
    snap = ray.get(hub.snapshot.remote())
    assert snap["gpus"] == [] and snap["nodes"] == {} and snap["stats"] == {}
    assert "no telemetry agent has reported yet" in snap["reason"] and "start_agents" in snap["reason"]
    # a poller waiting on the empty hub wakes up as soon as something arrives
    waiter = hub.wait_for_update.remote(snap["version"], 120.0)
    t0 = time.monotonic()
    hub.push_stats.remote("routing.replica", "A100-0", {"queue_len": 2})
    woke = ray.get(waiter)
    assert time.monotonic() - t0 < 60 and woke["stats"]["routing.replica"]["A100-0"]["values"] == {"queue_len": 2.0}
    ray.kill(hub)


@pytest.fixture
def replica_pushes():
    import ray

    @ray.remote(num_cpus=0)
    class Replica:
        def serve_one(self, n: int) -> None:
            from mixfleet.platform.telemetry import push_stats

            push_stats("earlyexit.replica", "mnist-0", {"exit_rate_0": 0.7, "served": n})

    return Replica


def test_stats_pushed_from_a_driver_and_from_an_actor_show_in_the_snapshot(ray_local, replica_pushes):
    import ray

    from mixfleet.platform.telemetry import push_stats

    push_stats("routing.replica", "A100-0", {"queue_len": 3, "tokens_per_s": 1200.0, "kv_util": 0.4})
    replica = replica_pushes.remote()
    ray.get(replica.serve_one.remote(5))
    snap = _wait_for(lambda s: "earlyexit.replica" in s["stats"] and "routing.replica" in s["stats"])
    assert snap["stats"]["routing.replica"]["A100-0"]["values"] == {"queue_len": 3.0, "tokens_per_s": 1200.0,
                                                                    "kv_util": 0.4}
    entry = snap["stats"]["earlyexit.replica"]["mnist-0"]
    assert entry["values"] == {"exit_rate_0": 0.7, "served": 5.0} and entry["stale"] is False
    ray.kill(replica)


def test_malformed_stats_and_drive_inputs_are_rejected_before_sending(ray_local):
    from mixfleet.platform.telemetry import hub_snapshot, push_stats, report_gpu_load, set_gpu_condition

    with pytest.raises(InputError, match=r"bad value queue_len='3' in stat 'bad.scope'/'r0': expected a finite"):
        push_stats("bad.scope", "r0", {"queue_len": "3"})
    with pytest.raises(InputError, match="bad telemetry scope ''"):
        push_stats("", "r0", {"queue_len": 3})
    with pytest.raises(InputError, match="bad util 1.5"):
        report_gpu_load("abc", 0, 1.5, 0.1)
    with pytest.raises(InputError, match="bad gpu_index -1"):
        report_gpu_load("abc", -1, 0.5, 0.1)
    with pytest.raises(InputError, match="unknown throttle reason 'hot'.*sw_thermal_slowdown"):
        set_gpu_condition("abc", 0, 0.5, throttle="hot")
    assert "bad.scope" not in hub_snapshot()["stats"]


def test_agents_start_once_per_node_and_report(ray_local):
    import ray

    from mixfleet.platform.telemetry import get_hub, start_agents

    snap = start_agents(period_s=0.5)
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert alive <= {nid for nid, n in snap["nodes"].items() if not n["stale"]}
    hub = get_hub()
    pids = {nid: ray.get(ray.get(hub.agent.remote(nid)).info.remote())["pid"] for nid in alive}
    start_agents(period_s=0.5)  # idempotent: the same agents keep running
    assert pids == {nid: ray.get(ray.get(hub.agent.remote(nid)).info.remote())["pid"] for nid in alive}


def test_the_agent_reads_nvml_unchanged_inside_a_ray_actor(ray_local, tmp_path_factory):
    """A real agent actor on the real NVML code path, with the fake pynvml first on its worker's path."""
    import shutil
    from pathlib import Path

    import ray

    from mixfleet.platform.telemetry import TelemetryAgent, TelemetryHub

    shim = tmp_path_factory.mktemp("nvml")
    shutil.copy(Path(__file__).with_name("fake_pynvml.py"), shim / "pynvml.py")
    hub = ray.remote(TelemetryHub).options(num_cpus=0, max_concurrency=8).remote()
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    agent = ray.remote(TelemetryAgent).options(num_cpus=0, max_concurrency=4,
                                               runtime_env={"env_vars": {"PYTHONPATH": path}}).remote(
        "gpu-host", None, 3, False, 0.2, "auto", hub)
    try:
        deadline = time.monotonic() + 60
        snap = ray.get(hub.snapshot.remote())
        while len(snap["gpus"]) < 3:
            assert time.monotonic() < deadline, ray.get(agent.info.remote())
            snap = ray.get(hub.wait_for_update.remote(snap["version"], 1.0))
        assert snap["nodes"]["gpu-host"]["source"] == "nvml" and snap["reason"] is None
        a100, t4, rtx = snap["gpus"]
        assert {g["source"] for g in snap["gpus"]} == {"nvml"}
        assert (a100["accelerator_type"], a100["power_w"], a100["processes"]) == \
            ("A100-80G", 312.5, [{"pid": 4242, "used_mib": 58 * 1024}])
        assert t4["power_w"] is None and t4["speed_factor"] == 0.5 and t4["throttle_reasons"] == ["sw_thermal_slowdown"]
        assert rtx["util_pct"] is None and rtx["temp_c"] == 35
    finally:
        ray.get(agent.stop.remote())
        ray.kill(agent)
        ray.kill(hub)


def test_watch_and_json_do_not_mix(cli):
    r = cli("cluster", "status", "--watch", "--json", timeout=60)
    assert r.returncode != 0 and "--watch and --json do not mix" in r.error_line


def test_gpu_check_script_reads_nvml_or_says_why_not(repo_root):
    """On a GPU machine the script prints NVML readings; elsewhere one clear error line."""
    import json
    import subprocess

    from mixfleet.platform.telemetry.sources import nvml_available

    proc = subprocess.run(["bash", str(repo_root / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=150, env={**os.environ, "PYTHON": sys.executable})
    if nvml_available():
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        assert out["gpus"] and {g["source"] for g in out["gpus"]} == {"nvml"}
    else:
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines()[-1].startswith("error: NVML is not usable here")


def test_connect_can_fix_the_metrics_export_port(tmp_path):
    """``connect(metrics_export_port=P)`` puts Ray's Prometheus endpoint on P (checked in a fresh process)."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import ray, urllib.request\n"
            "from mixfleet.platform import connect, shutdown\n"
            f"connect(num_cpus=1, metrics_export_port={port})\n"
            "print(ray.nodes()[0]['MetricsExportPort'])\n"
            f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10).status)\n"
            "shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(port), "200"]
