"""EMULATED device time for an early-exit replica (labelled emulation, off by default).

Why it exists: on a CPU-only host the bundled MNIST ResNet costs about
1 ms per sample batched, well below the CPU that the HTTP path spends on
each request (proxy, ingress, JSON), so the *server*, not the model, is the
bottleneck and no exit policy can change whether the SLA holds. Serving
studies need the opposite, a replica whose accelerator time dominates, as
it does for a large backbone on a GPU. With an :class:`EmulatedDevice` the
replica still computes every answer with the real model (labels, exits
and accuracy are real); after each stage or head it waits until that call
has taken the emulated device time::

    t(call, batch b) = launch_ms + full_ms_per_sample * b * flops(call) / flops(full pass)

``flops`` are torch's per-sample FLOP counts of that stage or head
(:func:`mixfleet.earlyexit.flops.exit_costs`), so an early exit saves
exactly its share of the backbone's work, and a batch amortises only the
launch cost. The wait is a sleep in the replica's compute thread: it costs
no CPU, like a GPU kernel the host waits on.

Invariants: a call never takes less than its real time (the wait only pads);
with ``device=None`` nothing is padded.
"""

from __future__ import annotations

import time

from pydantic import Field

from mixfleet.platform.config import StrictModel


class EmulatedDevice(StrictModel):
    """Emulated accelerator timing for the replica (see module doc); every output naming it says "emulated"."""

    full_ms_per_sample: float = Field(gt=0, description="emulated time of one full pass per sample (ms)")
    launch_ms: float = Field(0.0, ge=0, description="fixed emulated cost of each stage or head call (ms)")


class DeviceClock:
    """Pads each stage/head call of a model to its emulated device time."""

    def __init__(self, device: EmulatedDevice, stage_flops: list[int], head_flops: dict[int, int]):
        full = float(sum(stage_flops)) or 1.0
        per = device.full_ms_per_sample / 1e3
        self.launch_s = device.launch_ms / 1e3
        self.stage_s = [per * f / full for f in stage_flops]
        self.head_s = {i: per * f / full for i, f in head_flops.items()}

    @classmethod
    def for_model(cls, device: EmulatedDevice | None, model) -> DeviceClock | None:
        if device is None:
            return None
        from mixfleet.earlyexit.flops import exit_costs

        costs = exit_costs(model)
        head_stages = sorted(int(k) for k in model.heads)
        return cls(device, costs["stages"], dict(zip(head_stages, costs["heads"], strict=True)))

    def target_s(self, per_sample_s: float, batch: int) -> float:
        return self.launch_s + per_sample_s * batch

    def pad(self, started: float, per_sample_s: float, batch: int) -> None:
        """Sleep until ``started + target`` (``started`` from ``time.perf_counter()``)."""
        left = started + self.target_s(per_sample_s, batch) - time.perf_counter()
        if left > 0:
            time.sleep(left)
