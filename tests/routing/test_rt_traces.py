"""Trace readers and generators: bad rows named by row, empty traces, load scaling."""

from __future__ import annotations

import numpy as np
import pytest

from mixfleet.errors import InputError
from mixfleet.routing.capacity import fleet_capacity
from mixfleet.routing.fleet import load_fleet
from mixfleet.routing.runner import prepare
from mixfleet.routing.traces import open_trace, trace_stats

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _csv(tmp_path, body: str):
    p = tmp_path / "t.csv"
    p.write_text(HEADER + body)
    return p


def test_shipped_samples_and_bundled_traces_read(data_dir):
    conv = list(open_trace(data_dir / "traces" / "azure_conv_head300.csv"))
    assert len(conv) == 300 and conv[0].arrival_s == 0.0 and (conv[0].prompt, conv[0].output) == (374, 44)
    moon = list(open_trace(data_dir / "traces" / "mooncake_conversation_head200.jsonl"))
    assert len(moon) == 200 and (moon[0].prompt, moon[0].output) == (6758, 500)
    bundled = open_trace("azure-conv")
    head = [r for _, r in zip(range(300), bundled, strict=False)]
    assert head == conv  # the packaged copy is the same trace
    assert trace_stats(open_trace("azure-code")).requests == 8819


@pytest.mark.parametrize("body, row, why", [
    ("2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,12\n", 3, "expected 3 columns"),
    ("2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,-5,10\n", 3, "prompt tokens -5"),
    ("2023-11-16 18:15:46.6805900,374,-1\n", 2, "output tokens -1"),
    ("2023-11-16 18:15:46.6805900,abc,4\n", 2, "invalid literal"),
    ("2023-11-16 18:15:46.6805900,3,4\n2023-11-16 18:15:40.0,3,4\n", 3, "back in time"),
])
def test_bad_csv_rows_are_named_by_row_number(tmp_path, body, row, why):
    path = _csv(tmp_path, body)
    with pytest.raises(InputError, match=rf"bad row {row} in trace .*{why}"):
        list(open_trace(path))


def test_bad_mooncake_rows_and_empty_traces(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 3}\n{"timestamp": 10, "input_length": 5}\n')
    with pytest.raises(InputError, match=r"bad row 2 .*missing field 'output_length'"):
        list(open_trace(p))
    with pytest.raises(InputError, match=r"is empty"):
        trace_stats(open_trace(_csv(tmp_path, "")))
    with pytest.raises(InputError, match=r"does not exist"):
        open_trace(tmp_path / "nope.csv")


def test_generators_hit_their_rates_and_burstiness():
    for spec, cv_range in (("poisson:n=20000,rate=8,seed=1", (0.9, 1.1)), ("gamma:n=20000,rate=8,cv=4,seed=1", (3, 5)),
                           ("diurnal:n=20000,rate=8,period=200,amplitude=0.8,seed=1", (1.0, 1.6))):
        rows = list(open_trace(spec))
        t = np.array([r.arrival_s for r in rows])
        gaps = np.diff(t)
        assert len(rows) == 20000 and np.all(gaps >= 0)
        assert 20000 / t[-1] == pytest.approx(8, rel=0.1), spec
        assert cv_range[0] <= gaps.std() / gaps.mean() <= cv_range[1], spec
    assert list(open_trace("poisson:n=50,seed=3")) == list(open_trace("poisson:n=50,seed=3"))
    with pytest.raises(InputError, match="unknown generator option 'rat'"):
        open_trace("poisson:n=5,rat=3")


def test_load_scaling_offers_the_requested_fraction_of_capacity(repo_root):
    fleet = load_fleet(repo_root / "examples" / "routing" / "fleet.yaml")
    wl = prepare(fleet, "azure-conv", 0.7, limit=2000)
    cap = fleet_capacity(fleet, wl.stats)
    assert wl.capacity_req_s == pytest.approx(cap)
    assert trace_stats(wl.trace).rate == pytest.approx(0.7 * cap, rel=1e-6)
    # the fleet's capacity is the sum of its replicas': doubling the fleet doubles it
    from mixfleet.routing.fleet import fleet_from_dict

    cfg = fleet.config.model_dump()
    cfg["pools"] = [dict(p, count=2 * p["count"]) for p in cfg["pools"]]
    assert fleet_capacity(fleet_from_dict(cfg), wl.stats) == pytest.approx(2 * cap)
