"""The live emulated engine stops at EOS (the hidden true length), as the simulator's engine does."""

from __future__ import annotations

import asyncio

import pytest

from mixfleet.routing.fleet import fleet_from_dict
from mixfleet.routing.serve.emulated_engine import EmulatedEngine


def test_emulated_engine_stops_at_the_hidden_eos_not_at_the_cap():
    r = fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 1}]}).replicas[0]
    eng = EmulatedEngine(r.replica_id, r.perf, r.kv_tokens, r.max_batch, 8192)

    async def run(eos, cap=2048):
        return [c async for c in eng.generate(200, cap, output_tokens=eos)]

    short = asyncio.run(run(30))
    assert sum(len(c.tokens) for c in short) == 30  # EOS after 30 tokens although the cap is 2,048
    assert [c.done for c in short].count(True) == 1
    assert short[-1].e2e_s == pytest.approx(r.perf.isolated_latency(200, 30)[1], rel=1e-6)
    capped = asyncio.run(run(5000, cap=40))  # an answer longer than the cap is cut at the cap
    assert sum(len(c.tokens) for c in capped) == 40
    assert eng.in_system() == 0
