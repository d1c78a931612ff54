"""Honest information (caps, the shared length predictor) and the engine model (chunked prefill, preemption)."""

from __future__ import annotations

import numpy as np
import pytest

from mixfleet.routing.fleet import fleet_from_dict, load_fleet
from mixfleet.routing.lengths import CapRule, OutputPredictor
from mixfleet.routing.policy import Policy
from mixfleet.routing.runner import simulate
from mixfleet.routing.simulator import Simulation
from mixfleet.routing.traces import Trace, TraceRow, open_trace


@pytest.fixture(scope="module")
def fleet():
    from pathlib import Path

    return load_fleet(Path(__file__).resolve().parents[2] / "examples" / "routing" / "fleet.yaml")


def _trace(rows, name="test"):
    rows = list(rows)
    return Trace(name, lambda: iter(rows))


class Peeker(Policy):
    """A policy that tries to read the true output length off the request."""

    name = "peeker"

    def choose(self, request, state):
        return request.output % len(state.ids)


def test_a_policy_cannot_read_the_true_output_length(fleet):
    with pytest.raises(AttributeError):
        Simulation(fleet, Peeker(), open_trace("poisson:n=20,rate=5,seed=1")).run()


def test_policies_see_only_the_cap_and_learn_lengths_from_completed_requests(fleet):
    seen, learnt = [], []

    class Spy(Policy):
        name = "spy"

        def choose(self, request, state):
            seen.append((request.prompt_tokens, request.max_tokens, sorted(request.__slots__)))
            learnt.append(state.predictor.seen)
            return 0

    rows = [TraceRow(i * 0.5, 100, 10 + i) for i in range(60)]
    res = Simulation(fleet, Spy(), _trace(rows, "conv")).run()
    assert {cap for _, cap, _ in seen} == {2048}  # the conversation app's cap, never the true length
    assert seen[0][2] == ["arrival_s", "max_tokens", "prompt_tokens", "request_id"]
    assert sorted(res.metrics.np("output").tolist()) == [10 + i for i in range(60)]  # the engine stops at EOS
    assert learnt[0] == 0 and learnt[-1] > 30  # the predictor hears of completions only


def test_cap_rules():
    assert CapRule("pow2").apply(300) == (512, 300) and CapRule("pow2").apply(256) == (256, 256)
    assert CapRule.for_trace("app", "azure-code#seed2").apply(1500) == (1024, 1024)  # the client stops it at the cap
    assert CapRule.for_trace("app", "azure-conv").apply(1500) == (2048, 1500)
    assert CapRule("oracle").apply(77) == (77, 77)
    with pytest.raises(Exception, match="cap rule"):
        CapRule("psychic")


def test_the_output_predictor_learns_per_prompt_bucket_and_never_exceeds_the_cap():
    pred = OutputPredictor(refresh=10, min_count=20)
    assert pred.predict(100, 2048) == 256 and pred.predict(100, 64) == 64  # the prior, capped
    for k in range(200):
        pred.observe(100, 50 + k % 11)      # short prompts: outputs 50..60
        pred.observe(3000, 500 + k % 101)   # long prompts: outputs 500..600
    assert pred.predict(100, 2048) == pytest.approx(55, abs=1)
    assert pred.predict(3000, 2048) == pytest.approx(550, abs=3)
    assert pred.quantile(3000, 2048, 99) >= 595 and pred.quantile(3000, 520, 99) == 520
    assert 100 < pred.predict(20000, 2048) < 500  # an unseen bucket borrows the pooled history
    assert OutputPredictor(oracle=True).predict(100, 333) == 333


@pytest.mark.parametrize("reserve", ["prompt", "cap"])
def test_chunked_prefill_keeps_every_request_exactly_once_and_littles_law(fleet, reserve):
    res = simulate(fleet, open_trace("poisson:n=6000,rate=20,seed=3"), "least_work_left", chunked=True,
                   reserve=reserve)
    m = res.metrics
    assert sorted(m.np("request").tolist()) == list(range(6000))
    arrival, finish = m.np("arrival"), m.np("finish")
    assert np.all(m.np("ttft") > 0) and np.all(finish >= arrival + m.np("ttft") - 1e-12)
    lo, hi = np.percentile(arrival, 10), np.percentile(arrival, 90)
    grid = np.linspace(lo, hi, 4000)
    in_system = (np.searchsorted(np.sort(arrival), grid, side="right")
                 - np.searchsorted(np.sort(finish), grid, side="right"))
    sel = (arrival >= lo) & (arrival <= hi)
    assert in_system.mean() == pytest.approx(sel.sum() / (hi - lo) * m.np("e2e")[sel].mean(), rel=0.1)


def test_kv_exhaustion_preempts_and_the_victim_still_finishes_once():
    small = fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": "T4", "count": 1}], "max_batch": 256})
    rows = [TraceRow(i * 0.01, 2000, 1500) for i in range(60)]  # ~210k tokens of KV wanted, the T4 holds ~61k
    grow = simulate(small, _trace(rows), "round_robin", reserve="prompt", cap_rule="oracle")
    assert grow.extra["preemptions"] > 0
    assert sorted(grow.metrics.np("request").tolist()) == list(range(60))
    assert np.all(grow.metrics.np("output") == 1500)
    held = simulate(small, _trace(rows), "round_robin", reserve="cap", cap_rule="oracle")
    assert held.extra["preemptions"] == 0 and len(held.metrics) == 60


def test_a_prompt_longer_than_the_token_budget_is_prefilled_in_chunks_while_others_decode():
    fl = fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 1}],
                          "max_batched_tokens": 512})
    perf = fl.replicas[0].perf
    rows = [TraceRow(0.0, 100, 400), TraceRow(0.05, 4000, 5)]

    def by_request(chunked):
        m = simulate(fl, _trace(rows), "round_robin", chunked=chunked).metrics
        order = np.argsort(m.np("request"))
        return m.np("e2e")[order], m.np("ttft")[order]

    (c_e2e, c_ttft), (f_e2e, f_ttft) = by_request(True), by_request(False)
    # the decoding request keeps going during the long prompt's 8 chunks instead of pausing for it
    assert c_e2e[0] < f_e2e[0]
    assert c_ttft[1] > f_ttft[1] >= perf.prefill_time(4000)  # and the long prompt pays for sharing


def test_the_simulator_counts_its_iterations_and_busy_time():
    """A lone request: its prompt in ceil(prompt / token budget) chunked iterations (the last one gives the
    first token), then one decode step per further token, each step of a closed-form decode run counted; the
    replica is busy exactly while the request is in it. (The fidelity benchmark sets these against the real
    engine's timed iterations.)"""
    one = fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 1}],
                           "max_batched_tokens": 256})
    res = simulate(one, _trace([TraceRow(0.5, 1000, 10)]), "round_robin", chunked=True, cap_rule="oracle")
    assert res.extra["iterations"] == [4 + 9]
    assert res.extra["busy_s"][0] == pytest.approx(float(res.metrics.np("e2e")[0]), rel=1e-9)
