"""Fused execution on Ray, adaptive re-placement from telemetry, and ``xfaas bench``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from mixfleet.xfaas import Profile, load_clouds, load_workflow, make_plan
from mixfleet.xfaas.adaptive import AdaptivePlacer
from mixfleet.xfaas.bench import adaptive_scenario
from mixfleet.xfaas.executor import Executor

REPO = Path(__file__).resolve().parents[2]
SG = REPO / "examples/xfaas/smart_grid"


def test_fused_groups_run_as_one_task_with_the_same_output(ray_local):
    wf = load_workflow(SG / "workflow.yaml")
    clouds = load_clouds().restrict(["aws", "azure"])
    prof = Profile(wf, clouds)
    payload = json.loads((SG / "input.json").read_text())
    ex = Executor(wf, clouds=clouds, profile=prof, rng=np.random.default_rng(0))
    plain = ex.run(payload, make_plan(wf, "ilp", profile=prof))
    fused_plan = make_plan(wf, "ilp_fusion", profile=prof)
    fused = ex.run(payload, fused_plan)
    assert fused.output == plain.output  # fan-in inside a fused group keeps the spec order
    units = {row["unit"] for row in fused.nodes}
    assert len(units) == len(fused_plan.groups) < len(wf.nodes)
    assert len({row["ray_node_id"] for row in fused.nodes if len(row["unit"].split("+")) > 1}) == 1
    assert fused.latency_s < 0.6 * plain.latency_s


def test_adaptive_recovers_when_a_cloud_slows_down_and_static_does_not(ray_local, data_dir):
    wf = load_workflow(data_dir / "xfaas/chain4.yaml")
    clouds = load_clouds().restrict(["aws", "gcp"])
    scn = adaptive_scenario(wf, clouds, {"v": 1}, degrade="aws", factor=3.0, before=2, after=6, window=2)
    opt = scn["new_optimum_p50_s"]
    assert set(scn["static_placement"].values()) == {"aws"}
    assert set(scn["adaptive_placement"].values()) == {"gcp"}  # moved off the slowed cloud
    assert scn["adaptive_runs_to_within_10pct"] is not None and scn["adaptive_runs_to_within_10pct"] <= 3
    assert scn["adaptive_last5_p50_s"] <= 1.10 * opt
    assert scn["static_last5_p50_s"] > 1.5 * opt  # the static plan stays degraded
    # before the slowdown adaptive and static run the same plan
    assert scn["series"]["adaptive"][:2] == pytest.approx(scn["series"]["static"][:2])


def test_in_flight_runs_keep_their_plan(ray_local):
    wf = load_workflow(SG / "workflow.yaml")
    clouds = load_clouds().restrict(["aws", "azure"])
    prior = Profile(wf, clouds)
    placer = AdaptivePlacer(wf, prior, window=1)
    truth = Profile(wf, clouds)
    truth.slowdown["aws"] = 3.0
    ex = Executor(wf, clouds=clouds, profile=truth, rng=np.random.default_rng(0))
    payload = json.loads((SG / "input.json").read_text())
    first_plan = placer.plan
    before = dict(first_plan.placement)
    r = ex.run(payload, first_plan)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", ex.run(payload, first_plan)))
    t.start()
    assert placer.observe(r)  # re-plans while the second run is in flight
    t.join()
    assert placer.hub_reads > 0  # the figures came back from the TelemetryHub
    from mixfleet.platform.telemetry import hub_snapshot

    stats = hub_snapshot()["stats"]["xfaas"]
    assert stats["smart_grid/run"]["values"]["latency_s"] > 0
    assert any(k.startswith("smart_grid/TaskB@") for k in stats)
    assert placer.plan is not first_plan and placer.plan.placement != before
    assert first_plan.placement == before and box["r"].placement == before


def test_plan_cli_shows_fusion_and_rejects_a_bad_budget(cli):
    r = cli("xfaas", "plan", f"{SG}/workflow.yaml", "--only-clouds", "aws,azure", "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert out["strategy"] == "ilp_fusion" and out["fusion_groups"] and out["solve_time_s"] > 0
    assert set(out["placement"]) == {f"Task{c}" for c in "ABCDEFGHIJKLMNOPQ"}
    r = cli("xfaas", "plan", f"{SG}/workflow.yaml", "--placement", "ilp", "--budget", "0.000001")
    assert r.returncode != 0 and "cost budget theta=$1e-06" in r.error_line and r.stdout == ""
