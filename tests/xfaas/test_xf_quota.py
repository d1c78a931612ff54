"""Plans fitted to the clouds' published concurrency quotas at a planned load (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixfleet.xfaas import Profile, load_clouds, load_workflow, make_plan
from mixfleet.xfaas.adaptive import DriftController
from mixfleet.xfaas.model import UnitGraph, busy_by_cloud, overload

REPO = Path(__file__).resolve().parents[2]
SG = REPO / "examples/xfaas/smart_grid/workflow.yaml"


def _in_flight(plan, prof, rate):
    units = UnitGraph(prof.workflow, plan.groups, plan.fusion)
    return {c: rate * b for c, b in busy_by_cloud(units, [plan.placement[g[0]] for g in units.members], prof).items()}


@pytest.fixture
def smart_grid():
    wf = load_workflow(SG)
    return wf, Profile(wf, load_clouds())


@pytest.mark.parametrize("strategy", ["ilp", "ilp_fusion"])
def test_a_planned_load_moves_work_off_a_cloud_whose_quota_it_would_overfill(smart_grid, strategy):
    wf, prof = smart_grid
    blind = make_plan(wf, strategy, profile=prof)
    gcp = _in_flight(blind, prof, 1.0)["gcp"]  # busy seconds per run on gcp (quota 100)
    rate = 2 * 0.8 * 100 / gcp  # twice what gcp can carry within 80 % of its quota
    units = UnitGraph(wf, blind.groups, blind.fusion)
    prof.load_rps = rate
    assert overload(units, [blind.placement[g[0]] for g in units.members], prof) > 0  # blind overfills it
    fitted = make_plan(wf, strategy, profile=prof)
    assert fitted.load_rps == rate and fitted.overload == pytest.approx(0.0, abs=1e-6)
    for c, n in _in_flight(fitted, prof, rate).items():
        assert n <= 0.8 * prof.clouds.get(c).concurrency_quota + 1e-6, (c, n)
    assert fitted.placement != blind.placement and fitted.warnings == []
    assert fitted.predicted_latency_s >= blind.predicted_latency_s - 1e-9 or strategy == "ilp_fusion"
    assert fitted.to_json()["planned_load_rps"] == rate


def test_without_a_load_the_quotas_change_nothing(smart_grid):
    wf, prof = smart_grid
    plan = make_plan(wf, "ilp", profile=prof)
    assert plan.load_rps is None and plan.overload == 0.0
    assert set(plan.placement.values()) == {"gcp"}  # the fastest single cloud, as before quotas existed


def test_a_load_no_placement_carries_is_planned_with_a_warning_naming_the_cloud(smart_grid):
    wf, prof = smart_grid
    prof.load_rps = 5000.0
    plan = make_plan(wf, "ilp", profile=prof)
    assert plan.overload > 0
    assert len(plan.warnings) == 1 and "runs will queue there" in plan.warnings[0]
    assert "quota 1000" in plan.warnings[0] or "quota 2000" in plan.warnings[0]


def test_the_adaptive_controller_keeps_the_planned_load(smart_grid):
    wf, prof = smart_grid
    prof.load_rps = 20.0
    ctl = DriftController(wf, prof)
    assert ctl.model.load_rps == 20.0 and ctl.plan.overload == pytest.approx(0.0, abs=1e-6)
    ctl.model.slowdown["aws"] = 3.0  # a degraded cloud: the re-placement still fits the quotas
    cand = ctl._replan()
    assert cand.overload == pytest.approx(0.0, abs=1e-6)


def test_plan_rate_on_the_command_line(cli):
    r = cli("xfaas", "plan", SG, "--placement", "ilp", "--rate", "20", "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert out["planned_load_rps"] == 20.0 and out["overload_executions"] == pytest.approx(0.0, abs=1e-6)
    assert len(set(out["placement"].values())) > 1  # gcp alone would need ~400 executions in flight
    r = cli("xfaas", "plan", SG, "--rate", "0")
    assert r.returncode != 0 and "--rate 0.0 is not positive" in r.error_line
    r = cli("xfaas", "bench", "math", "--plan-rate", "-1")
    assert r.returncode != 0 and "--plan-rate -1.0 is negative" in r.error_line
