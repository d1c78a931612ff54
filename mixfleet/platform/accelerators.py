"""Known accelerator types, named as Ray names them.

A node advertises its GPU generation with the custom resource
``accelerator_type:<NAME>`` (Ray's convention, and what
``ray_actor_options={"accelerator_type": NAME}`` asks for). The names here
are Ray's own (``ray.util.accelerators``); each carries the figures the
emulated telemetry source needs (memory, power range, clocks).
"""

from __future__ import annotations

from dataclasses import dataclass

RESOURCE_PREFIX = "accelerator_type:"


@dataclass(frozen=True)
class AcceleratorSpec:
    """Datasheet figures of one GPU type (sources: NVIDIA datasheets)."""

    name: str
    memory_gib: float
    tdp_w: float
    idle_w: float
    max_sm_clock_mhz: int
    mem_bandwidth_gbs: float


# Datasheet figures: T4 (70 W, 16 GB, 320 GB/s), L4 (72 W, 24 GB, 300 GB/s),
# A10G (300 W, 24 GB, 600 GB/s), V100 SXM2 (300 W, 32 GB, 900 GB/s),
# A100 SXM4 (400 W, 40/80 GB, 1555/2039 GB/s), H100 SXM (700 W, 80 GB,
# 3350 GB/s), H200 (700 W, 141 GB, 4800 GB/s).
ACCELERATORS: dict[str, AcceleratorSpec] = {
    a.name: a
    for a in (
        AcceleratorSpec("T4", 16, 70, 10, 1590, 320),
        AcceleratorSpec("L4", 24, 72, 12, 2040, 300),
        AcceleratorSpec("A10G", 24, 300, 25, 1710, 600),
        AcceleratorSpec("V100", 32, 300, 40, 1530, 900),
        AcceleratorSpec("A100", 40, 400, 50, 1410, 1555),
        AcceleratorSpec("A100-40G", 40, 400, 50, 1410, 1555),
        AcceleratorSpec("A100-80G", 80, 400, 55, 1410, 2039),
        AcceleratorSpec("H100", 80, 700, 70, 1980, 3350),
        AcceleratorSpec("H200", 141, 700, 75, 1980, 4800),
    )
}


def accelerator_of(resources: dict[str, float]) -> str | None:
    """The accelerator type a node's resource dict advertises, if any."""
    for key in resources:
        if key.startswith(RESOURCE_PREFIX):
            return key[len(RESOURCE_PREFIX):]
    return None
