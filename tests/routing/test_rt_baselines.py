"""The baselines at full strength: the speed-aware least_work_left and kv_aware follow telemetry."""

from __future__ import annotations

import numpy as np
import pytest

from mixfleet.routing.fleet import fleet_from_dict
from mixfleet.routing.policies import BASELINES, make_policy
from mixfleet.routing.policy import ReplicaTelemetry, Request, RouterState, Telemetry
from mixfleet.routing.simulator import Simulation, SpeedChange
from mixfleet.routing.traces import open_trace


@pytest.fixture(scope="module")
def twins():
    return fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 2}]})


def test_every_baseline_is_registered():
    assert {"least_work_left", "least_work_left_blind", "kv_aware"} <= set(BASELINES)


@pytest.mark.parametrize("name", ["least_work_left", "kv_aware"])
def test_a_speed_aware_baseline_avoids_a_replica_telemetry_reports_slow(twins, name):
    state = RouterState.from_fleet(twins)
    state.apply_telemetry(Telemetry(1.0, (ReplicaTelemetry("A100-80GB-0", speed_factor=0.5),)))
    pol, blind = make_policy(name, twins), make_policy("least_work_left_blind", twins)
    req = Request(0, 500, 200)
    assert pol.choose(req, state) == 1   # the throttled twin looks twice as slow
    assert blind.choose(req, state) == 0  # the ablation cannot tell the twins apart


def test_least_work_left_follows_a_mid_trace_throttle(twins):
    trace = open_trace("poisson:n=4000,rate=30,seed=1")
    out = {}
    for name in ("least_work_left", "least_work_left_blind"):
        m = Simulation(twins, make_policy(name, twins), trace, faults=[SpeedChange(40.0, "A100-80GB-0", 0.25)]).run().metrics
        arrival, replica, e2e = m.np("arrival"), m.np("replica"), m.np("e2e")
        after = arrival > 50.0
        out[name] = ((replica[arrival < 40.0] == 0).mean(), (replica[after] == 0).mean(),
                     np.percentile(e2e[after], 99))
    share_before, share_after, p99 = out["least_work_left"]
    assert share_before == pytest.approx(0.5, abs=0.05) and share_after < 0.35  # traffic moves off the slow twin
    assert p99 < 0.7 * out["least_work_left_blind"][2]  # and the tail shows it
