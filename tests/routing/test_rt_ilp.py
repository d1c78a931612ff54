"""The routing ILP and the ilp policy: plans, re-solves, feedback, failures, speed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mixfleet.errors import SolverError
from mixfleet.routing.fleet import fleet_from_dict, load_fleet
from mixfleet.routing.ilp import PlanSolver
from mixfleet.routing.ilp_policy import IlpPolicy, full_mix, mix_from_workload
from mixfleet.routing.plan import ClassGrid, build_problem
from mixfleet.routing.policies import make_policy
from mixfleet.routing.policy import Request, RouterState
from mixfleet.routing.runner import prepare
from mixfleet.routing.simulator import Simulation, SpeedChange
from mixfleet.routing.traces import open_trace


@pytest.fixture(scope="module")
def fleet():
    from pathlib import Path

    return load_fleet(Path(__file__).resolve().parents[2] / "examples" / "routing" / "fleet.yaml")


@pytest.fixture(scope="module")
def workload(fleet):
    return prepare(fleet, "azure-conv", 0.7, limit=3000)


@pytest.fixture(scope="module")
def mix(workload):
    return mix_from_workload(workload)


def _share(plan, mix, group: str) -> float:
    g = plan.groups.index(group)
    rates = dict(zip(mix.classes, mix.rate, strict=True))
    return sum(rates.get(c, 0) * w[g] for c, w in zip(plan.classes, plan.weights, strict=True)) / mix.total_rate()


def test_plan_rows_are_distributions_that_respect_the_slo_mask(fleet, mix):
    strict = fleet_from_dict({**fleet.config.model_dump(), "slo": {"e2e_slowdown": 3.0, "ttft_slowdown": 10}})
    problem = build_problem(strict, mix)
    plan = PlanSolver(problem).solve()
    assert plan.status == "optimal"
    for k, row in enumerate(plan.weights):
        assert sum(row) == pytest.approx(1.0, abs=1e-6)
        for g, w in enumerate(row):
            if not problem.allowed[k][g]:
                assert w <= 1e-9  # a class never goes where its isolated latency breaks the SLO
    t4 = plan.groups.index("T4")
    assert not any(problem.allowed[k][t4] for k in range(len(plan.classes)))  # T4 is > 3x slower


def test_a_resolve_moves_work_off_a_throttled_pool(fleet, mix):
    solver = PlanSolver(build_problem(fleet, full_mix(ClassGrid(), mix, mix.total_rate())))
    before = solver.solve()
    speed = [0.3 if r.gpu == "A100-80GB" else 1.0 for r in fleet.replicas]
    after = solver.resolve(speed=speed)
    assert _share(after, mix, "A100-80GB") < 0.8 * _share(before, mix, "A100-80GB")
    lost = [r.gpu != "V100-32GB" for r in fleet.replicas]  # every V100 replica lost
    gone = solver.resolve(speed=[1.0] * len(speed), up=lost)
    assert _share(gone, mix, "V100-32GB") == pytest.approx(0.0, abs=1e-9)


def test_infeasible_slo_names_the_class_and_the_fastest_gpu(fleet, mix):
    tight = fleet_from_dict({**fleet.config.model_dump(), "slo": {"e2e_s": 0.05}})
    with pytest.raises(SolverError, match=r"infeasible SLO for class p\[.*fastest GPU \(A100-80GB\) takes \d"):
        build_problem(tight, mix)


def test_a_missing_solver_gives_an_install_hint(fleet, mix, monkeypatch):
    from pyomo.contrib.appsi.solvers import Highs

    monkeypatch.setattr(Highs, "available", lambda self: False)
    with pytest.raises(SolverError, match="pip install highspy"):
        IlpPolicy(fleet, mix)


def test_a_solver_failure_falls_back_to_least_work_left_and_never_crashes(fleet, workload, monkeypatch, caplog):
    policy = make_policy("ilp", fleet, workload=workload)

    def broken(**kwargs):
        raise SolverError("HiGHS failed on the routing plan: boom", "see the solver log")

    monkeypatch.setattr(policy._solver, "resolve", broken)
    with caplog.at_level(logging.WARNING, logger="mixfleet.routing.ilp"):
        sim = Simulation(fleet, policy, workload.trace, faults=[SpeedChange(5.0, "A100-80GB-0", 0.5)])
        res = sim.run()
    assert len(res.metrics) == 3000 and policy.fallbacks >= 1
    assert "routing by least_work_left" in caplog.text and "boom" in caplog.text
    assert sum(sim.state.outstanding) == 0 and max(sim.state.work_s) == 0.0


def test_feedback_replans_around_a_throttled_replica_and_a_frozen_plan_does_not(fleet, workload):
    shares = {}
    for feedback in (True, False):
        policy = make_policy("ilp", fleet, workload=workload, feedback=feedback)
        res = Simulation(fleet, policy, workload.trace, faults=[SpeedChange(20.0, "A100-80GB-0", 0.5)]).run()
        m = res.metrics
        late = m.np("arrival") > 30.0
        shares[feedback] = (np.mean(m.np("replica")[late] == 0), policy.solves)
    assert shares[True][1] >= 2 and shares[False][1] == 1  # feedback re-solved; frozen never did
    assert shares[True][0] < shares[False][0]  # and sent the slow replica less work


def test_the_fast_path_never_calls_the_solver(fleet, workload):
    """``choose`` only reads the installed plan: 4,000 decisions, no solve. (How fast a decision is
    is measured by benchmarks/routing_p99.py, not asserted here: a wall-clock bound depends on the
    machine's load.)"""
    from mixfleet.routing.policy import RouterState

    policy = make_policy("ilp", fleet, workload=workload)
    state = RouterState.from_fleet(fleet)
    solves = policy.solves
    assert solves >= 1 and policy.plan is not None
    for k, row in enumerate(open_trace("poisson:n=4000,rate=50,seed=3")):
        req = Request(k, row.prompt, row.output)
        i = policy.choose(req, state)
        assert 0 <= i < len(state.replicas)
        state.on_dispatch(i, req)
    assert policy.solves == solves


def _honest_mix(trace: str, fleet, outputs: float):
    """A prompt-class mix of ``trace`` whose output estimate is what the shared predictor would learn."""
    from mixfleet.routing.plan import ClassMix

    wl = prepare(fleet, trace, 0.85, limit=3000)
    mix = mix_from_workload(wl, cap_rule="oracle")
    return ClassMix(mix.grid, mix.classes, mix.rate, mix.prompt, tuple(outputs for _ in mix.classes))


def test_the_decode_reserve_keeps_long_prompts_off_one_fast_replica_only_when_prompts_dominate(fleet):
    # code completion: 2k-token prompts, ~30-token answers -> prefill is > 90% of the work
    code = IlpPolicy(fleet, _honest_mix("azure-code", fleet, 30.0), oracle_lengths=True)
    assert code.reserved is not None and fleet.replicas[code.reserved].gpu == "A100-80GB"
    state = RouterState.from_fleet(fleet)
    long_req = Request(0, 6000, 30)
    assert code.choose(long_req, state) != code.reserved  # even with the whole fleet idle
    assert code.choose(Request(1, 100, 30), state) == code.reserved  # short prompts still use it
    assert code.describe()["decode_reserve"]["prompts_below"] == code.reserve_below
    # conversation: answers as long as prompts are costly -> no reserve
    conv = IlpPolicy(fleet, _honest_mix("azure-conv", fleet, 250.0), oracle_lengths=True)
    assert conv.reserved is None and conv.describe()["decode_reserve"] is None
