"""Emulated clouds: prices, cold starts, speed, payload limits and hop latency.

EMULATION: no cloud is reached from mixfleet. A cloud is a name in this
registry (``aws``, ``azure``, ``gcp`` and the ``qpu`` resource provider)
whose numbers come from ``clouds.yaml`` (sources documented there). On an
emulated multi-node Ray cluster a cloud is also a set of Ray nodes carrying
the resource ``cloud:<name>``; on a plain local Ray it is a logical
placement with injected latency.

Invariants: cloud names are lowercase; every ordered pair of clouds has a
hop model (``a_ms + b_ms_per_kb * KB``; pairs not listed use ``default``);
a miss in the registry lists the valid names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from mixfleet.errors import ConfigError, unknown_name
from mixfleet.platform.config import StrictModel, load_model

DEFAULT_CLOUDS_FILE = Path(__file__).with_name("clouds.yaml")
RESOURCE_PREFIX = "cloud:"


class CloudConfig(StrictModel):
    region: str
    cold_start_s: float = Field(ge=0)
    speed: float = Field(gt=0)
    payload_limit_kb: float = Field(gt=0)
    invocation_usd: float = Field(ge=0)
    gb_s_usd: float = Field(ge=0)
    egress_usd_per_gb: float = Field(ge=0)
    hop_usd: float = Field(ge=0)
    accelerator: str | None = None
    # published limit on concurrent executions in the region (None: none modelled); planners given a
    # load keep rate x busy seconds per run under a share of it (see mixfleet.xfaas.model)
    concurrency_quota: int | None = Field(default=None, ge=1)
    # vCPUs bought by a memory size: memory / mb_per_vcpu (capped at vcpu_max) when set, else the
    # value of the largest vcpu_tiers key <= memory (documented per cloud in clouds.yaml, [V])
    mb_per_vcpu: float | None = Field(default=None, gt=0)
    vcpu_max: float = Field(default=8.0, gt=0)
    vcpu_tiers: dict[int, float] = Field(default_factory=lambda: {0: 1.0})

    def vcpus(self, memory_mb: float) -> float:
        if self.mb_per_vcpu:
            return min(self.vcpu_max, memory_mb / self.mb_per_vcpu)
        return max((v for k, v in self.vcpu_tiers.items() if k <= memory_mb), default=min(self.vcpu_tiers.values()))

    def parallel_slots(self, memory_mb: float) -> int:
        """How many members of a fused unit run at once: floor(vCPUs), at least one (the fusion rule)."""
        return max(1, int(self.vcpus(memory_mb) + 1e-9))


class HopModel(StrictModel):
    a_ms: float = Field(ge=0)
    b_ms_per_kb: float = Field(ge=0)


class ClaimCheckConfig(StrictModel):
    extra_ms: float = Field(ge=0)
    usd: float = Field(ge=0)


class NoiseConfig(StrictModel):
    exec_sigma: float = Field(default=0.0, ge=0)
    hop_sigma: float = Field(default=0.0, ge=0)


class CloudsConfig(StrictModel):
    """The whole ``clouds.yaml``."""

    clouds: dict[str, CloudConfig]
    hops: dict[str, HopModel]
    claim_check: ClaimCheckConfig
    noise: NoiseConfig = NoiseConfig()


class Clouds:
    """The registry of emulated clouds built from a :class:`CloudsConfig`."""

    def __init__(self, config: CloudsConfig, *, source: str = "clouds.yaml"):
        self.config = config
        self.source = source
        self.excluded: set[str] = set()  # clouds left out by restrict(); still valid names in specs
        for name in config.clouds:
            if name != name.lower():
                raise ConfigError(f"cloud name '{name}' in {source} is not lowercase", "rename it")
        if "default" not in config.hops:
            raise ConfigError(f"'hops' in {source} has no 'default' entry", "add hops.default: {a_ms, b_ms_per_kb}")
        for key in config.hops:
            if key == "default":
                continue
            src, sep, dst = key.partition("->")
            for c in (src, dst):
                if not sep or c not in config.clouds:
                    raise ConfigError(f"bad hop key '{key}' in {source}: expected FROM->TO over known clouds",
                                      f"clouds: {', '.join(sorted(config.clouds))}")

    @property
    def names(self) -> list[str]:
        return list(self.config.clouds)

    def general(self) -> list[str]:
        """Clouds that run ordinary functions (not accelerator providers such as the QPU)."""
        return [n for n, c in self.config.clouds.items() if c.accelerator is None]

    def restrict(self, names: list[str]) -> Clouds:
        """The same registry limited to ``names`` (accelerator providers such as the QPU are kept)."""
        for n in names:
            self.check(n)
        keep = {k: v for k, v in self.config.clouds.items() if k in names or v.accelerator is not None}
        hops = {k: v for k, v in self.config.hops.items()
                if k == "default" or all(c in keep for c in k.split("->"))}
        cfg = self.config.model_copy(update={"clouds": keep, "hops": hops})
        out = Clouds(cfg, source=f"{self.source} restricted to {', '.join(names)}")
        out.excluded = self.excluded | (set(self.config.clouds) - set(keep))
        return out

    def get(self, name: str) -> CloudConfig:
        try:
            return self.config.clouds[name]
        except KeyError:
            raise unknown_name("cloud", name, self.names) from None

    def check(self, name: str) -> str:
        self.get(name)
        return name

    def hop_model(self, src: str, dst: str) -> HopModel:
        return self.config.hops.get(f"{src}->{dst}", self.config.hops["default"])

    def limit_kb(self, src: str, dst: str) -> float:
        return min(self.get(src).payload_limit_kb, self.get(dst).payload_limit_kb)

    def hop_s(self, src: str, dst: str, kb: float) -> float:
        """Latency of one hop carrying ``kb`` KB; a claim check adds its round trip."""
        m = self.hop_model(src, dst)
        s = (m.a_ms + m.b_ms_per_kb * kb) / 1000.0
        if kb > self.limit_kb(src, dst):
            s += self.config.claim_check.extra_ms / 1000.0
        return s

    def hop_usd(self, src: str, dst: str, kb: float) -> float:
        """Orchestration price of the hop, egress when it leaves ``src``, and a claim check if needed."""
        usd = self.get(dst).hop_usd
        if src != dst:
            usd += self.get(src).egress_usd_per_gb * kb / 1e6
        if kb > self.limit_kb(src, dst):
            usd += self.config.claim_check.usd
        return usd

    def run_usd(self, cloud: str, exec_s: float, memory_mb: float) -> float:
        """One invocation: request price plus GB-seconds (billed per ms)."""
        c = self.get(cloud)
        billed = max(round(exec_s, 3), 0.001)
        return c.invocation_usd + c.gb_s_usd * (memory_mb / 1024.0) * billed


@lru_cache(maxsize=8)
def _load(path: str) -> Clouds:
    return Clouds(load_model(path, CloudsConfig, what="clouds file"), source=path)


def load_clouds(path: str | Path | None = None) -> Clouds:
    """The registry from ``path`` (default: the documented ``clouds.yaml`` in this package)."""
    return _load(str(Path(path) if path else DEFAULT_CLOUDS_FILE))
