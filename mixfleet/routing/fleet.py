"""The fleet spec (``fleet.yaml``) and the validated :class:`Fleet` built from it.

A fleet is one model served by replica pools of given GPU types. Building a
:class:`Fleet` checks every name against the profiles (misses list the valid
names), derives each replica's KV-cache capacity from memory, and refuses a
model that does not fit a pool's GPU. Unknown keys in the YAML are rejected
with a did-you-mean. Nothing here has side effects.

Replica ids are ``<GPU>-<n>`` numbered across the fleet in pool order (e.g.
``A100-80GB-0``); the simulator and the live router use the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from mixfleet.platform.config import StrictModel, load_model, parse_model
from mixfleet.routing.profiles import IterationModel, ProfileBook, load_profiles


class PoolConfig(StrictModel):
    """``count`` replicas of one GPU type.

    ``engine`` picks the live router's engine for this pool: ``emulated`` (the simulator's model on a wall
    clock) or ``torch`` (the REAL engine: real compute, random weights); unset = the serve options' engine.
    """

    gpu: str
    count: int = Field(default=1, ge=1, le=4096)
    max_batch: int | None = Field(default=None, ge=1, le=4096)
    engine: Literal["emulated", "torch"] | None = None


class SloConfig(StrictModel):
    """Splitwise-style slowdown SLOs against the request alone on the fastest GPU.

    A request meets its SLO when its TTFT and end-to-end latency are at most
    ``*_slowdown`` times its isolated latencies on the fastest GPU of the
    fleet, and (if set) at most the absolute ``*_s`` bounds.
    """

    ttft_slowdown: float = Field(default=10.0, ge=1.0)
    e2e_slowdown: float = Field(default=10.0, ge=1.0)
    ttft_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)


class FleetConfig(StrictModel):
    """The contents of ``fleet.yaml``."""

    model: str
    pools: list[PoolConfig] = Field(min_length=1)
    max_batch: int = Field(default=64, ge=1, le=4096)
    max_batched_tokens: int = Field(default=8192, ge=64)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.1, le=1.0)
    reserve_gb: float = Field(default=1.0, ge=0)
    slo: SloConfig = SloConfig()
    profiles: str | None = None


@dataclass(frozen=True)
class Replica:
    """One replica of the fleet (static facts only)."""

    replica_id: str
    gpu: str
    accelerator: str  # Ray's accelerator_type name
    max_batch: int
    kv_tokens: int
    price_per_hour: float
    perf: IterationModel
    engine: str | None = None  # live router engine of its pool; None = the serve options' engine


@dataclass(frozen=True)
class Fleet:
    """A validated fleet: the model, its replicas and the profiles they came from."""

    config: FleetConfig
    model: str
    replicas: tuple[Replica, ...]
    book: ProfileBook

    @property
    def gpu_types(self) -> list[str]:
        return list(dict.fromkeys(r.gpu for r in self.replicas))

    def fastest(self) -> Replica:
        """The replica with the shortest decode step (ties: faster prefill)."""
        return min(self.replicas, key=lambda r: (r.perf.decode_step(1, 1024), r.perf.prefill_time(1024)))

    def price_per_hour(self) -> float:
        return sum(r.price_per_hour for r in self.replicas)

    def describe(self) -> str:
        parts = [f"{p.count}x{p.gpu}" for p in self.config.pools]
        return f"{self.model} on " + " + ".join(parts)


def build_fleet(config: FleetConfig, book: ProfileBook | None = None, *, base_dir: Path | None = None) -> Fleet:
    """Validate ``config`` against the profiles and lay out the replicas."""
    if book is None:
        path = config.profiles
        if path is not None and base_dir is not None and not Path(path).is_absolute():
            path = str(base_dir / path)
        book = load_profiles(path)
    book.model(config.model)
    fits_on = [g for g in book.gpus if book.iteration_model(g, config.model).kv_capacity_tokens(
        config.gpu_memory_utilization, config.reserve_gb) >= book.models[config.model].max_context]
    replicas: list[Replica] = []
    counters: dict[str, int] = {}
    for pool in config.pools:
        gpu = book.gpu(pool.gpu)
        perf = book.iteration_model(pool.gpu, config.model)
        kv = perf.check_fits(config.gpu_memory_utilization, config.reserve_gb, fits_on)
        for _ in range(pool.count):
            n = counters.get(pool.gpu, 0)
            counters[pool.gpu] = n + 1
            replicas.append(Replica(f"{pool.gpu}-{n}", pool.gpu, gpu.ray_accelerator,
                                    pool.max_batch or config.max_batch, kv, gpu.price_per_hour, perf,
                                    pool.engine))
    return Fleet(config, config.model, tuple(replicas), book)


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a ``fleet.yaml``."""
    cfg = load_model(path, FleetConfig, what="fleet file")
    return build_fleet(cfg, base_dir=Path(path).parent)


def fleet_from_dict(data: dict, book: ProfileBook | None = None) -> Fleet:
    """Build a fleet from plain data (tests, the live router)."""
    return build_fleet(parse_model(data, FleetConfig, source="fleet spec"), book)
