"""The discrete-event simulator and the engine model: the invariants a user relies on."""

from __future__ import annotations

import numpy as np
import pytest

from mixfleet.routing.fleet import fleet_from_dict, load_fleet
from mixfleet.routing.policies import make_policy
from mixfleet.routing.runner import simulate
from mixfleet.routing.simulator import Simulation, SpeedChange
from mixfleet.routing.traces import Trace, TraceRow, open_trace


def _trace(rows):
    rows = list(rows)
    return Trace("test", lambda: iter(rows))


def _one(gpu: str, **extra):
    return fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": gpu, "count": 1}], **extra})


@pytest.fixture(scope="module")
def fleet(repo_root_module):
    return load_fleet(repo_root_module / "examples" / "routing" / "fleet.yaml")


@pytest.fixture(scope="module")
def repo_root_module():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("policy", ["round_robin", "pow2", "least_outstanding", "least_work_left"])
def test_every_request_finishes_exactly_once(fleet, policy):
    trace = open_trace("gamma:n=3000,rate=40,cv=3,seed=2")
    res = simulate(fleet, trace, policy, seed=1)
    m = res.metrics
    assert len(m) == 3000
    assert sorted(m.np("request").tolist()) == list(range(3000))  # each request once, none lost
    assert np.all(m.np("finish") >= m.np("arrival")) and np.all(m.np("ttft") > 0)
    assert np.all(m.np("e2e") >= m.np("ttft"))


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("gpu", ["T4", "V100-32GB", "A100-80GB", "H100"])
@pytest.mark.parametrize("prompt, output", [(1, 1), (900, 1), (37, 250), (5000, 700)])
def test_a_request_alone_takes_exactly_its_isolated_latency(gpu, prompt, output, chunked):
    fl = _one(gpu)
    res = simulate(fl, _trace([TraceRow(0.0, prompt, output)]), "round_robin", chunked=chunked)
    ttft, e2e = fl.replicas[0].perf.isolated_latency(prompt, output)
    assert res.metrics.np("ttft")[0] == pytest.approx(ttft, rel=1e-9)
    assert res.metrics.np("e2e")[0] == pytest.approx(e2e, rel=1e-9)


def test_a_faster_gpu_is_never_slower_on_the_same_request():
    order = ("T4", "V100-32GB", "A100-80GB", "H100")
    rows = list(open_trace("poisson:n=300,rate=2,seed=5"))
    for row in rows[:40]:  # each request alone, simulated on each GPU
        e2e = [simulate(_one(g), _trace([row]), "round_robin").metrics.np("e2e")[0] for g in order]
        assert e2e == sorted(e2e, reverse=True), row
    # and on a shared workload, every latency percentile improves with the GPU
    pct = [np.percentile(simulate(_one(g), _trace(rows), "round_robin").metrics.np("e2e"), [50, 90, 99])
           for g in order]
    for slower, faster in zip(pct, pct[1:], strict=False):
        assert np.all(faster <= slower)


def test_continuous_batching_overlaps_requests_and_kv_admission_queues_them():
    fl = _one("A100-80GB")
    alone = simulate(fl, _trace([TraceRow(0.0, 100, 400)]), "round_robin").metrics.np("e2e")[0]
    two = simulate(fl, _trace([TraceRow(0.0, 100, 400), TraceRow(0.001, 100, 400)]), "round_robin").metrics
    assert two.np("e2e").max() < 1.2 * alone  # batched together, not one after the other
    # with room for only one sequence's KV, the second request waits for the first
    tiny = _one("A100-80GB", max_batch=1)
    seq = simulate(tiny, _trace([TraceRow(0.0, 100, 400), TraceRow(0.001, 100, 400)]), "round_robin").metrics
    assert seq.np("e2e").max() > 1.9 * alone


def test_littles_law_holds_on_a_steady_poisson_run(fleet):
    res = simulate(fleet, open_trace("poisson:n=6000,rate=20,seed=3"), "least_work_left")
    m = res.metrics
    arrival, finish = m.np("arrival"), m.np("finish")
    lo, hi = np.percentile(arrival, 10), np.percentile(arrival, 90)  # steady-state window
    grid = np.linspace(lo, hi, 4000)
    in_system = (np.searchsorted(np.sort(arrival), grid, side="right")
                 - np.searchsorted(np.sort(finish), grid, side="right"))
    sel = (arrival >= lo) & (arrival <= hi)
    lam = sel.sum() / (hi - lo)
    assert in_system.mean() == pytest.approx(lam * m.np("e2e")[sel].mean(), rel=0.1)


def test_the_same_seed_gives_identical_output_and_another_seed_does_not(fleet):
    trace = open_trace("gamma:n=2000,rate=40,cv=3,seed=4")
    a = simulate(fleet, trace, "pow2", seed=7)
    b = simulate(fleet, trace, "pow2", seed=7)
    c = simulate(fleet, trace, "pow2", seed=8)
    assert a.summary == b.summary and np.array_equal(a.metrics.np("e2e"), b.metrics.np("e2e"))
    assert not np.array_equal(a.metrics.np("replica"), c.metrics.np("replica"))


def test_a_throttled_replica_slows_down_and_telemetry_reports_it(fleet):
    from mixfleet.routing.policy import Policy

    seen = []

    class Spy(Policy):
        name = "spy"

        def __init__(self):
            self.inner = make_policy("round_robin", fleet)

        def choose(self, request, state):
            return self.inner.choose(request, state)

        def observe(self, telemetry, state):
            seen.append(state.speed[0])

    trace = open_trace("poisson:n=3000,rate=30,seed=1")
    Simulation(fleet, Spy(), trace, faults=[SpeedChange(30.0, "A100-80GB-0", 0.5)]).run()
    assert seen[3] == pytest.approx(1.0) and min(seen[-20:]) == pytest.approx(0.5, rel=0.02)


def test_requests_longer_than_the_context_are_clipped_and_counted():
    fl = _one("A100-80GB")
    res = simulate(fl, _trace([TraceRow(0.0, 30000, 100), TraceRow(1.0, 10, 10)]), "round_robin")
    assert res.clipped == 1 and len(res.metrics) == 2
