"""GPU and model profiles, and the per-(GPU, model) iteration-time model.

EMULATION: there is no GPU here. Prefill and decode iteration times come from
a roofline model (bytes over memory bandwidth, FLOPs over fp16 FLOP/s, the
larger wins) whose per-GPU efficiencies are calibrated in ``profiles.yaml``
so that a 7B fp16 model reproduces the published per-GPU figures
(T4 ~56 ms decode step / ~2.2k tok/s prefill, ..., H100 ~5.3 ms /
~53k tok/s). A measured profile table in the same file replaces the
roofline for one (GPU, model) pair.

Notation (one replica, one model):
    W    weight bytes = 2 * params (fp16)
    kvb  KV-cache bytes per token
    BW   memory bandwidth x bw_efficiency      (bytes/s)
    F    fp16 FLOP/s x flops_efficiency        (FLOP/s)
    L, h layers, hidden size
    prefill(n tokens, s2 = sum of squared prompt lengths)
         = max(W / BW, (2 params n + 2 L h s2) / F)
    decode step(batch b, total context C tokens)
         = max((W + kvb C) / BW, (2 params b + 4 L h C) / F)
Both decode terms are linear in C, which lets the engine advance many
decode steps in closed form (see :mod:`mixfleet.routing.engine`).

Invariant: a model that does not fit a GPU (weights + reserve + one
full-context sequence of KV cache > usable memory) is refused with a
:class:`~mixfleet.errors.ConfigError` naming the GPUs where it does fit.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

from pydantic import Field

from mixfleet.errors import ConfigError, unknown_name
from mixfleet.platform.config import StrictModel, parse_model, read_config_file


class GpuProfile(StrictModel):
    """Datasheet figures and calibrated efficiencies of one GPU type."""

    ray_accelerator: str
    memory_gb: float = Field(gt=0)
    mem_bandwidth_gbs: float = Field(gt=0)
    fp16_tflops: float = Field(gt=0)
    price_per_hour: float = Field(ge=0)
    bw_efficiency: float = Field(gt=0, le=1)
    flops_efficiency: float = Field(gt=0, le=1)


class ModelProfile(StrictModel):
    """Architecture figures of one LLM (fp16 weights and KV cache)."""

    params_b: float = Field(gt=0)
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    kv_bytes_per_token: int = Field(gt=0)
    max_context: int = Field(gt=0)


class IterationFit(StrictModel):
    """A measured engine's iteration time, fitted by least squares (``mixfleet routing profile``).

    time (ms) = overhead_ms + per_token_ms x (tokens in the iteration: one per decoding sequence plus the
    prompt tokens) + per_kv_token_ms x (key tokens the iteration reads: the decodes' contexts and each
    prompt chunk's keys) + per_kv_over_knee_ms x max(0, those keys - kv_knee) + per_prompt_sq_ms x sum of
    the prompt chunks' attention squares + per_q_kv_ns / 1e6 x (query tokens in the iteration x every key
    token it attends to, all sequences together). A sum, not the roofline's max: on a CPU (and for a tiny
    model on a GPU) the fixed per-iteration cost of the engine adds to the compute. The query x key term
    is an attention computed over the whole packed batch under a mask (``transformers``' paged attention
    on a CPU does this): small in a decode step, it dominates one that mixes prompt chunks with decodes.
    The knee is where the keys an iteration reads stop fitting the CPU's caches: on the 2-core
    development machine each key past about 4,400 per iteration cost about twice as much (1.3 then
    2.6 us). Without a knee (``kv_knee`` unset) the key cost is linear.
    """

    overhead_ms: float = Field(ge=0)
    per_token_ms: float = Field(ge=0)
    per_kv_token_ms: float = Field(ge=0)
    per_prompt_sq_ms: float = Field(default=0.0, ge=0)
    per_q_kv_ns: float = Field(default=0.0, ge=0)
    kv_knee: int | None = Field(default=None, ge=1)
    per_kv_over_knee_ms: float = Field(default=0.0, ge=0)


class MeasuredProfile(StrictModel):
    """A measured (GPU, model) pair that replaces the roofline's calibration.

    With only ``decode_step_ms`` (batch 1) and ``prefill_tok_s`` the pair's roofline efficiencies are
    re-derived from them; with ``fit`` the iteration times are the fitted sum (:class:`IterationFit`) and
    ``kv_tokens`` (if set) is the engine's KV-cache size.
    """

    gpu: str
    model: str
    decode_step_ms: float = Field(gt=0)
    prefill_tok_s: float = Field(gt=0)
    fit: IterationFit | None = None
    kv_tokens: int | None = Field(default=None, ge=1)


class ProfileBook(StrictModel):
    """Everything in a profiles file."""

    gpus: dict[str, GpuProfile]
    models: dict[str, ModelProfile]
    measured: list[MeasuredProfile] = []

    def gpu(self, name: str) -> GpuProfile:
        if name not in self.gpus:
            raise unknown_name("GPU type", name, self.gpus)
        return self.gpus[name]

    def model(self, name: str) -> ModelProfile:
        if name not in self.models:
            raise unknown_name("model", name, self.models)
        return self.models[name]

    def iteration_model(self, gpu: str, model: str) -> IterationModel:
        g, m = self.gpu(gpu), self.model(model)
        for entry in self.measured:
            if entry.gpu == gpu and entry.model == model:
                if entry.fit is not None:
                    return FittedIterationModel(gpu, model, g, m, entry)
                return IterationModel.from_measured(gpu, model, g, m, entry)
        return IterationModel(gpu, model, g, m)


DEFAULT_PROFILES = "profiles.yaml"


def load_profiles(path: str | Path | None = None) -> ProfileBook:
    """Read a profiles file (default: the one shipped in this package)."""
    if path is None:
        return _default_profiles()
    return parse_model(read_config_file(path, what="profiles file"), ProfileBook, source=f"'{path}'")


@functools.lru_cache(maxsize=1)
def _default_profiles() -> ProfileBook:
    import yaml

    text = resources.files("mixfleet.routing").joinpath(DEFAULT_PROFILES).read_text(encoding="utf-8")
    return parse_model(yaml.safe_load(text), ProfileBook, source=f"built-in {DEFAULT_PROFILES}")


class IterationModel:
    """Iteration times of one model on one GPU type (roofline, calibrated; emulated)."""

    def __init__(self, gpu_name: str, model_name: str, gpu: GpuProfile, model: ModelProfile,
                 bw_efficiency: float | None = None, flops_efficiency: float | None = None):
        self.gpu_name, self.model_name, self.gpu, self.model = gpu_name, model_name, gpu, model
        self.params = model.params_b * 1e9
        self.weight_bytes = 2.0 * self.params
        self.bw = gpu.mem_bandwidth_gbs * 1e9 * (bw_efficiency or gpu.bw_efficiency)
        self.flops = gpu.fp16_tflops * 1e12 * (flops_efficiency or gpu.flops_efficiency)
        # decode step = max(m0 + m1 C, c0 b + c1 C)
        self.m0 = self.weight_bytes / self.bw
        self.m1 = model.kv_bytes_per_token / self.bw
        self.cb = 2.0 * self.params / self.flops
        self.c1 = 4.0 * model.layers * model.hidden / self.flops
        self._att_prefill = 2.0 * model.layers * model.hidden / self.flops

    @classmethod
    def from_measured(cls, gpu_name, model_name, gpu, model, entry: MeasuredProfile) -> IterationModel:
        params = model.params_b * 1e9
        bw_eff = 2.0 * params / (gpu.mem_bandwidth_gbs * 1e9 * entry.decode_step_ms / 1e3)
        fl_eff = 2.0 * params * entry.prefill_tok_s / (gpu.fp16_tflops * 1e12)
        return cls(gpu_name, model_name, gpu, model, bw_efficiency=bw_eff, flops_efficiency=fl_eff)

    # -- iteration times -------------------------------------------------------
    def prefill_time(self, tokens: float, sum_sq: float | None = None) -> float:
        """Seconds for one prefill iteration over ``tokens`` prompt tokens."""
        sq = tokens * tokens if sum_sq is None else sum_sq
        return max(self.m0, 2.0 * self.params * tokens / self.flops + self._att_prefill * sq)

    def decode_step(self, batch: int, context: float) -> float:
        """Seconds for one decode iteration of ``batch`` sequences holding ``context`` tokens."""
        return max(self.m0 + self.m1 * context, self.cb * batch + self.c1 * context)

    def mixed_time(self, batch: int, context: float, tokens: int, sum_sq: float,
                   chunk_kv: float | None = None) -> float:
        """Seconds for one chunked-prefill iteration: ``batch`` decodes over ``context`` tokens plus
        ``tokens`` prompt tokens whose attention costs ``sum_sq`` (a chunk [o, o+n) costs (o+n)^2 - o^2)
        and reads ``chunk_kv`` key tokens (o+n per chunk; the roofline does not use it).

        With no decodes it is :meth:`prefill_time`; with no prompt tokens it is :meth:`decode_step`.
        """
        return max(self.m0 + self.m1 * context,
                   self.cb * (batch + tokens) + self.c1 * context + self._att_prefill * sum_sq)

    def decode_lines(self, batch: int, ctx0: float, dctx: float) -> tuple[float, float, float, float]:
        """Step time at step i (context ctx0 + dctx*i) as max(a1 + b1 i, a2 + b2 i)."""
        return (self.m0 + self.m1 * ctx0, self.m1 * dctx,
                self.cb * batch + self.c1 * ctx0, self.c1 * dctx)

    def isolated_latency(self, prompt: int, output: int) -> tuple[float, float]:
        """(TTFT, end-to-end) seconds of one request alone on this GPU."""
        ttft = self.prefill_time(prompt)
        # decode step i (1..output-1) reads prompt + i tokens of context
        return ttft, ttft + run_time(self.decode_lines(1, prompt + 1, 1.0), output - 1)

    # -- summary rates used by routers and capacity estimates ------------------
    def kv_capacity_tokens(self, memory_utilization: float, reserve_gb: float) -> int:
        free = self.gpu.memory_gb * 1e9 * memory_utilization - self.weight_bytes - reserve_gb * 1e9
        return max(0, int(free // self.model.kv_bytes_per_token))

    def check_fits(self, memory_utilization: float, reserve_gb: float, fits_on: list[str]) -> int:
        """The KV capacity in tokens, or a ConfigError if one full-context sequence does not fit."""
        kv = self.kv_capacity_tokens(memory_utilization, reserve_gb)
        if kv < self.model.max_context:
            need = (self.weight_bytes + self.model.max_context * self.model.kv_bytes_per_token) / 1e9
            usable = self.gpu.memory_gb * memory_utilization - reserve_gb
            where = f"it fits on: {', '.join(fits_on)}" if fits_on else "it fits on no single GPU type"
            raise ConfigError(
                f"model '{self.model_name}' does not fit GPU '{self.gpu_name}': {self.weight_bytes / 1e9:.1f} GB "
                f"of weights plus one {self.model.max_context}-token sequence of KV cache need {need:.1f} GB, "
                f"but only {usable:.1f} GB is usable",
                f"use a smaller model or another GPU type ({where})")
        return kv


class FittedIterationModel(IterationModel):
    """Iteration times of a measured engine: the fitted sum of :class:`IterationFit` (see there).

    The roofline attributes keep their meaning for the code that reads them: ``2 params / flops`` is the
    per-token cost and ``_att_prefill`` the per-square cost, so capacity and plan estimates use the fit too.
    """

    def __init__(self, gpu_name, model_name, gpu: GpuProfile, model: ModelProfile, entry: MeasuredProfile):
        super().__init__(gpu_name, model_name, gpu, model)
        f = entry.fit
        self.t0, self.tok, self.kv, self.sq = (f.overhead_ms / 1e3, f.per_token_ms / 1e3, f.per_kv_token_ms / 1e3,
                                               f.per_prompt_sq_ms / 1e3)
        self.qkv = f.per_q_kv_ns / 1e9
        self.knee = float(f.kv_knee) if f.kv_knee is not None else math.inf
        self.over = f.per_kv_over_knee_ms / 1e3 if f.kv_knee is not None else 0.0
        self.kv_tokens = entry.kv_tokens
        self.flops = 2.0 * self.params / max(self.tok, 1e-12)
        self._att_prefill = self.sq
        self.m0, self.m1, self.cb, self.c1 = self.t0, self.kv, self.tok, self.kv

    def _keys(self, keys: float) -> float:
        """The cost of reading ``keys`` key tokens: linear, steeper past the knee."""
        return self.kv * keys + self.over * max(0.0, keys - self.knee)

    def prefill_time(self, tokens: float, sum_sq: float | None = None) -> float:
        sq = tokens * tokens if sum_sq is None else sum_sq
        # whole prompts attend to their own tokens: the batch's keys are its `tokens`
        return self.t0 + self.tok * tokens + self._keys(tokens) + self.sq * sq + self.qkv * tokens * tokens

    def decode_step(self, batch: int, context: float) -> float:
        return self.t0 + self.tok * batch + self._keys(context) + self.qkv * batch * context

    def mixed_time(self, batch: int, context: float, tokens: int, sum_sq: float,
                   chunk_kv: float | None = None) -> float:
        keys = context + (tokens if chunk_kv is None else chunk_kv)
        return (self.t0 + self.tok * (batch + tokens) + self._keys(keys) + self.sq * sum_sq
                + self.qkv * (batch + tokens) * keys)

    def decode_lines(self, batch: int, ctx0: float, dctx: float) -> tuple[float, float, float, float]:
        # below the knee one line; past it the same line plus over x (context - knee): their max is the sum
        per_ctx = self.kv + self.qkv * batch
        a, b = self.t0 + self.tok * batch + per_ctx * ctx0, per_ctx * dctx
        if self.over <= 0.0:
            return (a, b, a, b)
        return (a, b, a + self.over * (ctx0 - self.knee), b + self.over * dctx)

    def kv_capacity_tokens(self, memory_utilization: float, reserve_gb: float) -> int:
        if self.kv_tokens is not None:
            return self.kv_tokens
        return super().kv_capacity_tokens(memory_utilization, reserve_gb)


def run_time(lines: tuple[float, float, float, float], k: int) -> float:
    """Sum over steps i = 0..k-1 of max(a1 + b1 i, a2 + b2 i) (closed form)."""
    if k <= 0:
        return 0.0
    a1, b1, a2, b2 = lines
    cross = _crossing(a1, b1, a2, b2)
    if cross <= 0 or cross >= k:
        # one line dominates the whole range; pick it at the midpoint
        mid = (k - 1) / 2.0
        a, b = (a1, b1) if a1 + b1 * mid >= a2 + b2 * mid else (a2, b2)
        return k * a + b * k * (k - 1) / 2.0
    n = int(math.ceil(cross))
    first = (a1, b1) if a1 >= a2 else (a2, b2)
    second = (a2, b2) if a1 >= a2 else (a1, b1)
    return _line_sum(first[0], first[1], 0, n) + _line_sum(second[0], second[1], n, k)


def steps_within(lines: tuple[float, float, float, float], k: int, dt: float) -> int:
    """How many whole steps (at most k) complete within ``dt`` seconds."""
    if dt <= 0:
        return 0
    lo, hi = 0, k
    while lo < hi:  # binary search on the closed-form sum: O(log k)
        mid = (lo + hi + 1) // 2
        if run_time(lines, mid) <= dt:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _crossing(a1, b1, a2, b2) -> float:
    if b1 == b2:
        return -1.0
    return (a2 - a1) / (b1 - b2)


def _line_sum(a: float, b: float, i0: int, i1: int) -> float:
    """Sum of a + b i for i in [i0, i1)."""
    n = i1 - i0
    if n <= 0:
        return 0.0
    return n * a + b * (i0 + i1 - 1) * n / 2.0
