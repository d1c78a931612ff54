"""The executor on a local Ray: workloads, fan-in order, retries, timeouts, pins, conditions, claim checks."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from mixfleet.errors import JobError
from mixfleet.xfaas import Profile, load_clouds, load_workflow, make_plan
from mixfleet.xfaas.executor import Executor
from mixfleet.xfaas.qpu import simulate

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples" / "xfaas"


def run_example(name: str, placement: str = "ilp", payload=None, **kw):
    wf = load_workflow(EX / name / "workflow.yaml")
    clouds = load_clouds()
    prof = Profile(wf, clouds)
    plan = make_plan(wf, placement, profile=prof)
    payload = payload if payload is not None else json.loads((EX / name / "input.json").read_text())
    return Executor(wf, clouds=clouds, profile=prof, rng=np.random.default_rng(0), **kw).run(payload, plan)


def write(tmp_path, text: str) -> Path:
    (tmp_path / "funcs.py").write_text((REPO / "tests/data/xfaas/funcs.py").read_text())
    p = tmp_path / "wf.yaml"
    p.write_text(text)
    return p


def run_file(path: Path, payload, placement="aws", **kw):
    wf = load_workflow(path)
    clouds = load_clouds()
    prof = Profile(wf, clouds)
    return Executor(wf, clouds=clouds, profile=prof, rng=np.random.default_rng(1), **kw).run(
        payload, make_plan(wf, placement, profile=prof))


def test_smart_grid_walks_the_critical_path_and_flags_the_spike(ray_local):
    r = run_example("smart_grid")
    readings = json.loads((EX / "smart_grid/input.json").read_text())["readings"]
    assert r.output["readings"] == readings
    assert r.output["steps"] == 11  # A B C E F I J K L P Q: the longest path has 11 functions
    assert r.output["anomalies"] == [4]  # the 9.8 kWh spike
    assert len(r.nodes) == 17 and r.latency_s > 5 and r.cost_usd > 0


def test_graph_matches_networkx(ray_local):
    r = run_example("graph")
    g = nx.barabasi_albert_graph(30, 3, seed=7)
    for i, (u, v) in enumerate(g.edges):
        g.edges[u, v]["weight"] = 1 + (u * 31 + v * 17 + i) % 10
    out = r.output
    assert out["order"] == ["bfs_order", "pagerank_top", "mst_weight"]  # fan-in in spec order
    assert out["bfs_order"] == list(nx.bfs_tree(g, 7)) and len(out["bfs_order"]) == 30
    pr = nx.pagerank(g)
    assert out["pagerank_top"] == max(pr, key=pr.get)
    assert out["mst_weight"] == nx.minimum_spanning_tree(g).size(weight="weight")


def test_math_nested_fan_in_matches_numpy(ray_local):
    r = run_example("math")
    out = r.output
    a = np.random.default_rng(12).normal(size=(10, 10))
    b = np.random.default_rng(13).normal(size=(10, 10))
    assert out["trace_AB"] == pytest.approx(np.trace(a @ b))
    assert out["pythagoras"] == pytest.approx(1.0)
    k = int(np.random.default_rng(10).integers(2, 10_000))
    assert int(np.prod(out["factors"])) == k
    assert out["residual"] < 1e-9


def test_text_fan_out_ten_and_condition(ray_local):
    r = run_example("text")
    assert set(r.output) == {"summarize"}  # long text: only the summary branch ran
    s = r.output["summarize"]
    assert s["shard_order"] == list(range(10))  # fan-in order = spec order, not finish order
    assert s["top"][0] == ["the", 13] or s["top"][0] == ("the", 13)
    skipped = {row["node"] for row in r.nodes if row["skipped"]}
    assert skipped == {"short_note"}
    short = run_example("text", payload={"text": "a short note about a fox"})
    assert set(short.output) == {"short_note"} and short.output["short_note"]["words"] == 6


def test_image_chain_and_claim_check_across_clouds(ray_local, tmp_path):
    r = run_example("image", placement="aws")
    import importlib.util

    spec = importlib.util.spec_from_file_location("xf_image_functions", EX / "image/functions.py")
    f = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(f)
    expected = f.stats(f.threshold(f.edges(f.blur(f.grayscale(f.load({"size": 128}))))))
    assert r.output == expected  # the chain on Ray equals the functions composed in-process
    y0, x0, y1, x1 = r.output["bbox"]
    assert 28 <= y0 <= 36 and 92 <= y1 <= 100 and r.output["edge_pixels"] > 200  # the square's outline
    assert r.claim_checks == 0  # 192 KB fits AWS's 256 KB limit
    # pin load to aws and grayscale to azure: the 192 KB image crosses into a 64 KB-limit cloud
    text = (EX / "image/workflow.yaml").read_text().replace(
        "{name: load, function: functions.py:load,", "{name: load, pin: {cloud: aws}, function: functions.py:load,"
    ).replace("{name: grayscale, function: functions.py:grayscale,",
              "{name: grayscale, pin: {cloud: azure}, function: functions.py:grayscale,")
    (tmp_path / "functions.py").write_text((EX / "image/functions.py").read_text())
    (tmp_path / "wf.yaml").write_text(text)
    crossed = run_file(tmp_path / "wf.yaml", {"size": 128}, placement="aws")
    assert crossed.output == r.output
    rows = {row["node"]: row for row in crossed.nodes}
    assert rows["load"]["cloud"] == "aws" and rows["grayscale"]["cloud"] == "azure"
    assert rows["load"]["claim_check"] and rows["load"]["out_kb"] == pytest.approx(192.0)
    assert crossed.claim_checks >= 1
    clouds = load_clouds()
    wf = load_workflow(tmp_path / "wf.yaml")
    hops = sum(clouds.hop_usd(rows[u]["cloud"], rows[v]["cloud"], max(rows[u]["out_kb"], wf.nodes[u].output_kb))
               for u, v, _ in wf.edges)
    assert crossed.cost_usd == pytest.approx(sum(row["cost_usd"] for row in crossed.nodes) + hops, rel=1e-9)
    # the crossing hop carries the claim check's price and AWS egress for 192 KB
    assert clouds.hop_usd("aws", "azure", 192) == pytest.approx(
        clouds.get("azure").hop_usd + clouds.config.claim_check.usd + 0.09 * 192 / 1e6)


def test_quantum_cut_simulation_matches_full_and_qpu(ray_local):
    r = run_example("quantum")
    out = r.output
    assert out["fidelity"] == pytest.approx(1.0, abs=1e-9)
    assert out["max_abs_diff"] < 1e-9 and out["norm"] == pytest.approx(1.0)
    spec = json.loads((EX / "quantum/input.json").read_text())
    full = simulate(spec["qubits"], spec["gates"])
    assert out["most_likely"] == int(np.argmax(np.abs(full) ** 2))
    rows = {row["node"]: row for row in r.nodes}
    assert rows["qpu_run"]["cloud"] == "qpu" and rows["qpu_run"]["polls"] >= 1
    assert all(rows[f"sim_{k}"]["cloud"] != "qpu" for k in ("a0", "a1", "b0", "b1"))


def test_fan_in_order_is_deterministic(ray_local, tmp_path):
    p = write(tmp_path, """
name: fanin
nodes:
  - {name: s, function: funcs.py:inc}
  - {name: slow, function: funcs.py:slow_tag}
  - {name: b, function: funcs.py:tag_b}
  - {name: a, function: funcs.py:tag_a}
  - {name: j, function: funcs.py:gather}
edges:
  - {from: s, to: [slow, b, a]}
  - {from: slow, to: j}
  - {from: b, to: j}
  - {from: a, to: j}
""")
    for _ in range(2):
        assert run_file(p, {"x": 1}).output == ["slow", "b", "a"]


def test_retries_with_backoff_then_success(ray_local, tmp_path):
    p = write(tmp_path, """
name: retry
nodes:
  - {name: f, function: funcs.py:flaky, retries: {max_attempts: 3, backoff_s: 0.05, jitter: 0.5}}
""")
    r = run_file(p, {"counter": str(tmp_path / "n"), "fail_times": 2})
    assert r.output == {"ok": True, "failures_before": 2}
    row = r.nodes[0]
    assert row["attempts"] == 3
    assert r.wall_s >= 0.05 * 0.5 + 0.1 * 0.5  # two backoffs (with jitter) were waited


def test_retries_exhausted_names_node_attempt_and_cause(ray_local, tmp_path):
    p = write(tmp_path, """
name: retry
nodes:
  - {name: f, function: funcs.py:flaky, retries: {max_attempts: 2, backoff_s: 0.01}}
""")
    with pytest.raises(JobError, match=r"node 'f' failed on attempt 2/2 .*ConnectionError: transient failure 2"):
        run_file(p, {"counter": str(tmp_path / "n"), "fail_times": 5})


def test_a_dead_worker_is_retried_by_the_platform_not_charged_to_the_function(ray_local, tmp_path):
    # max_attempts 1: the function's own failures are not retried, but its worker dying is a platform
    # failure that Ray re-runs; b was dispatched behind a (pipelined) on a's output references
    p = write(tmp_path, """
name: crash
nodes:
  - {name: a, function: funcs.py:dies_once}
  - {name: b, function: funcs.py:inc}
edges: [{from: a, to: b}]
""")
    r = run_file(p, {"counter": str(tmp_path / "died"), "x": 1})
    assert (tmp_path / "died").exists() and r.output["x"] == 2
    assert [row["attempts"] for row in r.nodes] == [1, 1]


def test_timeout_cancels_the_attempt(ray_local, tmp_path):
    p = write(tmp_path, """
name: slow
nodes:
  - {name: nap, function: funcs.py:sleepy, timeout_s: 0.5}
""")
    import time

    t0 = time.monotonic()
    with pytest.raises(JobError, match=r"node 'nap' failed on attempt 1/1 .*timed out after 0.5 s"):
        run_file(p, {"sleep_s": 60})
    assert time.monotonic() - t0 < 40  # cancelled: nowhere near the 60 s sleep, whatever the machine's load


def test_pins_are_honoured_by_every_strategy(ray_local, tmp_path):
    p = write(tmp_path, """
name: pins
nodes:
  - {name: a, function: funcs.py:inc, exec_ms: {aws: 10, azure: 10, gcp: 10}}
  - {name: b, function: funcs.py:inc, pin: {cloud: azure, region: centralindia}, exec_ms: {aws: 1, azure: 500, gcp: 1}}
  - {name: c, function: funcs.py:inc, exec_ms: {aws: 10, azure: 10, gcp: 10}}
edges: [{from: a, to: b}, {from: b, to: c}]
""")
    for strategy in ("ilp", "aws", "gcp", "xfaas_cut"):
        r = run_file(p, {"x": 0}, placement=strategy)
        assert r.placement["b"] == "azure" and r.output["x"] == 3
        assert {row["node"]: row["cloud"] for row in r.nodes}["b"] == "azure"


def test_xfaas_style_function_runs_through_the_shim(ray_local, tmp_path):
    p = write(tmp_path, """
name: shim
nodes:
  - {name: d, function: funcs.py:xfaas_style_double, style: xfaas}
""")
    assert run_file(p, {"x": 21}).output == {"x": 42}


def test_cold_then_warm_and_costs_add_up(ray_local, tmp_path):
    wf = load_workflow(REPO / "tests/data/xfaas/chain12.yaml")
    clouds = load_clouds()
    prof = Profile(wf, clouds)
    ex = Executor(wf, clouds=clouds, profile=prof)
    plan = make_plan(wf, "aws", profile=prof)
    first, second = ex.run({"v": 1}, plan), ex.run({"v": 1}, plan)
    assert first.output == second.output == {"v": 1}
    assert all(r["cold_start"] for r in first.nodes) and not any(r["cold_start"] for r in second.nodes)
    assert first.latency_s - second.latency_s > 13 * 0.25 * 0.9  # 13 AWS cold starts of 0.25 s
    assert second.cost_usd == pytest.approx(sum(r["cost_usd"] for r in second.nodes) + 12 * 2.5e-5, rel=1e-6)


def test_a_failure_ahead_of_pipelined_nodes_names_the_failing_node(ray_local, tmp_path):
    # b and c are dispatched at once behind f (no retries, no conditions); f's failure must be reported
    p = write(tmp_path, """
name: pipe
nodes:
  - {name: f, function: funcs.py:flaky}
  - {name: b, function: funcs.py:inc}
  - {name: c, function: funcs.py:inc}
edges: [{from: f, to: b}, {from: b, to: c}]
""")
    with pytest.raises(JobError, match=r"node 'f' failed on attempt 1/1 .*ConnectionError"):
        run_file(p, {"counter": str(tmp_path / "n"), "fail_times": 5})


def test_sleep_emulation_injects_the_modelled_delays(ray_local, data_dir):
    wf = load_workflow(data_dir / "xfaas/chain4.yaml")
    clouds = load_clouds()
    prof = Profile(wf, clouds)
    plan = make_plan(wf, "aws", profile=prof)
    virtual = Executor(wf, clouds=clouds, profile=prof).run({"v": 1}, plan)
    slept = Executor(wf, clouds=clouds, profile=prof, emulation="sleep", sleep_scale=0.05).run({"v": 1}, plan)
    # 4 x 1 s exec + 3 AWS hops + 4 cold starts, scaled by 0.05, really waited for
    assert slept.wall_s >= 0.05 * (4 * 1.0 + 3 * 0.115 + 4 * 0.25) * 0.95
    assert virtual.wall_s < slept.wall_s and slept.output == virtual.output == {"v": 1}


def test_one_call_run(ray_local):
    import mixfleet.xfaas as xf

    r = xf.run(str(EX / "math/workflow.yaml"), {"seed": 10, "req": 4}, placement="gcp")
    assert set(r.placement.values()) == {"gcp"} and r.output["pythagoras"] == pytest.approx(1.0)


def test_an_imported_xfaas_dag_runs_with_stand_ins(ray_local, data_dir):
    wf = load_workflow(data_dir / "xfaas/graph-dag.json")
    clouds = load_clouds()
    prof = Profile(wf, clouds)
    r = Executor(wf, clouds=clouds, profile=prof).run({"size": 10}, make_plan(wf, "ilp", profile=prof))
    # pass-through stand-ins: TaskE fans in B, C, D (three copies), CollectLogs passes that list on
    assert r.output == [{"size": 10}] * 3
    assert {row["node"] for row in r.nodes} == set(wf.nodes)


def test_a_timeout_counts_the_nodes_own_run_not_its_upstream(ray_local, tmp_path):
    # nap sleeps 1.5 s; b has a 1.2 s timeout and must not be charged nap's time
    p = write(tmp_path, """
name: t
nodes:
  - {name: nap, function: funcs.py:sleepy}
  - {name: b, function: funcs.py:inc, timeout_s: 1.2}
edges: [{from: nap, to: b}]
""")
    assert run_file(p, {"sleep_s": 1.5, "x": 1}).output["x"] == 2
