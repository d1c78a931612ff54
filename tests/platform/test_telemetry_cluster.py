"""Telemetry on the emulated A100/V100/T4 fleet: CLI, Prometheus, load drive, agent faults, demo."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

pytestmark = pytest.mark.multinode


def _gpu_nodes() -> dict[str, dict]:
    import ray

    from mixfleet.platform.accelerators import accelerator_of

    return {accelerator_of(n["Resources"]): n for n in ray.nodes()
            if n["Alive"] and accelerator_of(n["Resources"])}


def _wait_for(predicate, timeout_s: float = 30.0):
    from mixfleet.platform.telemetry import hub_snapshot, wait_for_update

    snap = hub_snapshot()
    deadline = time.monotonic() + timeout_s
    while not predicate(snap):
        assert time.monotonic() < deadline, f"timed out; nodes: {snap['nodes']}"
        snap = wait_for_update(snap["version"], timeout_s=1.0)
    return snap


def _reading(snap: dict, node_id: str, index: int) -> dict:
    return next(g for g in snap["gpus"] if g["node_id"] == node_id and g["gpu_index"] == index)


def test_status_json_shows_every_gpu_of_every_node_as_emulated(ray_cluster, cli):
    r = cli("cluster", "status", "--address", ray_cluster.address, "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.json()
    assert set(out["by_accelerator"]) >= {"A100", "V100", "T4", "cpu"} and out["telemetry"]["reason"] is None
    gpu_nodes = [n for n in out["nodes"] if n["accelerator_type"]]
    assert {n["accelerator_type"] for n in gpu_nodes} == {"A100", "V100", "T4"}
    for node in gpu_nodes:
        tel = node["telemetry"]
        assert tel["source"] == "emulated" and tel["stale"] is False
        assert [g["gpu_index"] for g in tel["gpus"]] == list(range(int(node["gpus"])))
        for g in tel["gpus"]:
            assert g["source"] == "emulated" and g["accelerator_type"] == node["accelerator_type"]
            assert g["mem_total_mib"] > 0 and g["power_w"] > 0 and g["stale"] is False
    assert len(out["gpus"]) == sum(int(n["gpus"]) for n in gpu_nodes)


def test_watch_refreshes_the_gpu_table(ray_cluster, cli):
    r = cli("cluster", "status", "--address", ray_cluster.address, "--watch", "--count", "2", "--interval", "0.3",
            timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "GPU telemetry (live" in r.stderr and "emulated" in r.stderr and "V100" in r.stderr


def test_prometheus_endpoint_exports_gpu_gauges(ray_cluster):
    from mixfleet.platform.telemetry import start_agents

    start_agents()
    a100 = _gpu_nodes()["A100"]
    url = f"http://127.0.0.1:{a100['MetricsExportPort']}/metrics"
    want = re.compile(r'^ray_mixfleet_gpu_mem_total_mib\{[^}]*accelerator_type="A100"[^}]*gpu="1"[^}]*'
                      r'node="' + a100["NodeID"] + r'"[^}]*\} (\S+)$', re.M)
    deadline = time.monotonic() + 60  # Ray pushes metrics to its exporter every few seconds
    while True:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        m = want.search(body)
        if m or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert m, f"no A100 gauge at {url}; mixfleet lines: {[ln for ln in body.splitlines() if 'mixfleet' in ln][:5]}"
    assert float(m.group(1)) == 40 * 1024
    for field in ("util_pct", "power_w", "temp_c", "sm_clock_mhz", "throttled"):
        assert f"ray_mixfleet_gpu_{field}{{" in body, field


def test_reported_load_and_a_slowdown_show_through_telemetry(ray_cluster):
    from mixfleet.platform.telemetry import (
        clear_gpu_condition,
        report_gpu_load,
        set_gpu_condition,
        start_agents,
    )

    start_agents()
    v100 = _gpu_nodes()["V100"]["NodeID"]
    report_gpu_load(v100, 1, util=0.7, mem_frac=0.5, ttl_s=30)
    set_gpu_condition(v100, 1, speed_factor=0.5)
    snap = _wait_for(lambda s: _reading(s, v100, 1)["speed_factor"] == 0.5 and _reading(s, v100, 1)["util_pct"] == 70)
    slow, other = _reading(snap, v100, 1), _reading(snap, v100, 0)
    assert slow["sm_clock_mhz"] == 765 and "sw_thermal_slowdown" in slow["throttle_reasons"]
    assert slow["mem_used_mib"] > 15_000 and other["util_pct"] == 0 and other["speed_factor"] == 1.0
    clear_gpu_condition(v100, 1)
    snap = _wait_for(lambda s: _reading(s, v100, 1)["speed_factor"] == 1.0)
    assert _reading(snap, v100, 1)["sm_clock_mhz"] == 1530


def test_killed_agent_is_restarted_by_ray_and_its_gpus_are_stale_in_between(ray_cluster):
    import ray

    from mixfleet.platform.telemetry import get_hub, hub_snapshot, start_agents

    start_agents()
    hub = get_hub()
    t4 = _gpu_nodes()["T4"]["NodeID"]
    agent = ray.get(hub.agent.remote(t4))
    old_pid = ray.get(agent.info.remote())["pid"]
    before = hub_snapshot()["nodes"][t4]
    assert not before["stale"]
    ray.kill(agent, no_restart=False)
    down = _wait_for(lambda s: s["nodes"][t4]["stale"], timeout_s=20)
    assert "agent died" in down["nodes"][t4]["down"]
    assert [g["stale"] for g in down["gpus"] if g["node_id"] == t4] == [True, True]
    assert not any(g["stale"] for g in down["gpus"] if g["node_id"] != t4)  # the other nodes are unaffected
    back = _wait_for(lambda s: not s["nodes"][t4]["stale"], timeout_s=60)
    node = back["nodes"][t4]
    assert node["restarts"] == before["restarts"] + 1 and node["pid"] != old_pid and node["down"] is None
    # the kill is one gap at least; on a loaded machine a late sample may add another, so no exact count
    assert node["stale_gaps"] >= before["stale_gaps"] + 1
    assert [g["stale"] for g in back["gpus"] if g["node_id"] == t4] == [False, False]
    assert ray.get(agent.info.remote())["pid"] == node["pid"]  # the same handle reaches the restarted agent


def test_a_hub_lost_for_good_is_recreated_and_agents_find_it(ray_cluster):
    import ray

    from mixfleet.platform.telemetry import get_hub, hub_snapshot, push_stats, start_agents

    start_agents()
    old = get_hub()
    ray.kill(old, no_restart=True)
    # the next read makes a new hub; agents find it and introduce themselves, so it watches them again
    gpu_nodes = {n["NodeID"] for n in _gpu_nodes().values()}
    snap = _wait_for(lambda s: gpu_nodes <= {nid for nid, n in s["nodes"].items() if not n["stale"]})
    assert get_hub()._actor_id != old._actor_id
    assert len([g for g in snap["gpus"] if g["node_id"] in gpu_nodes]) == 6
    push_stats("routing.replica", "A100-0", {"queue_len": 1})
    _wait_for(lambda s: "routing.replica" in s["stats"])
    hub = get_hub()
    assert all(ray.get(hub.agent.remote(nid)) is not None for nid in gpu_nodes)
    assert hub_snapshot()["reason"] is None


def test_demo_step_shows_the_telemetry_table(ray_cluster, tmp_path):
    from mixfleet.demo import DemoContext
    from mixfleet.platform.telemetry.demo import step

    out = step(DemoContext(workdir=tmp_path, json_mode=True, cluster_file="cluster.yaml",
                           address=ray_cluster.address))
    assert out["sources"] == ["emulated"] and out["gpus_by_accelerator"] == {"A100": 2, "V100": 2, "T4": 2}
    assert out["slowdown_seen"] and out["reason"] is None
    assert all(u > 0 for u in out["busy_util_pct"].values())
