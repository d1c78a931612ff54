"""Fleet capacity for a workload, and the ``--load F`` arrival scaling.

Method (documented in docs/routing.md): a replica's capacity in requests/s
for a trace is ``1 / s`` where ``s`` is the replica time one *mean* request
takes when the replica is saturated:

    s = prefill compute (2 params p + 2 L h E[p^2]) / F            (roofline, compute side)
      + E[o] * step(B, B * (E[p] + E[o] / 2)) / B                   (decode at batch B)
    B = min(max_batch, kv_tokens // (E[p] + E[o]))                  (largest batch the KV cache admits)

The fleet's capacity is the sum over replicas: the rate at which every
replica is busy all the time if requests were split in proportion to speed.
``--load F`` stretches (or compresses) the trace's arrival times so that its
mean rate is ``F`` times that capacity; the request sizes are unchanged.
"""

from __future__ import annotations

from mixfleet.errors import InputError
from mixfleet.routing.traces import TraceStats


def replica_service_s(replica, stats: TraceStats) -> float:
    perf = replica.perf
    p, o = stats.prompt_mean, stats.output_mean
    prefill = (2.0 * perf.params * p) / perf.flops + perf._att_prefill * stats.prompt_sq_mean
    batch = max(1, min(replica.max_batch, int(replica.kv_tokens // max(1.0, p + o))))
    decode = o * perf.decode_step(batch, batch * (p + o / 2.0)) / batch
    return prefill + decode


def fleet_capacity(fleet, stats: TraceStats) -> float:
    """Requests/s the fleet sustains on this workload (see module doc)."""
    return sum(1.0 / replica_service_s(r, stats) for r in fleet.replicas)


def load_time_scale(stats: TraceStats, capacity_req_s: float, load: float) -> float:
    """The factor to multiply arrival times by so that the rate is ``load`` x capacity."""
    if not (load > 0):
        raise InputError(f"load {load} must be > 0", "give a fraction of capacity such as 0.7")
    return stats.rate / (load * capacity_req_s)
