"""``mixfleet routing profile``: measure the REAL engine and write a ``measured:`` profile for the simulator.

Real compute, random weights: the engine is :mod:`mixfleet.routing.serve.torch_engine`'s
(``transformers``' continuous batching over a seeded random Llama), run offline
in this process on this machine's CPU or a CUDA GPU.

Grid (after an unrecorded warm-up burst; requests are streamed, as a serving
replica's are; every point is run ``repeats`` times, the median kept):

- prefill: one request alone with a prompt of n tokens (n in ``prompt_grid``,
  each at most ``max_batched_tokens`` so it is one iteration): the time from
  submission to its first token is one prefill iteration of n tokens;
- decode: b requests (b in ``batch_grid``) with prompts of c tokens (c in
  ``context_grid``) generating ``decode_tokens`` tokens each; once all b are
  decoding, the median interval between consecutive tokens is one decode step
  of batch b over a context of b x (c + tokens generated so far).

- burst: ``burst`` requests of mixed prompt and output lengths submitted at
  once, the way a loaded replica runs: every iteration of the engine is timed
  where ``transformers`` runs the model (``model_runner.compute_batch``), from
  one forward pass to the next, with its composition read from the batch
  (query and key lengths per sequence).
  The grid alone never mixes prompt chunks with decodes, and on a CPU those
  iterations cost far more than the sum of their parts (see ``per_q_kv_ns``).
  Without that hook (another ``transformers``) the burst is skipped and said so.
- trickle: ``trickle`` synthetic requests (their own seed; prompt and output lengths log-uniform in
  8-400 and 4-200 tokens, clipped to the context) arriving as a Poisson stream at ``trickle_rate`` per
  second through the engine's serving path (:meth:`TorchEngine.generate`), every iteration timed by the
  same hook; those the engine ran straight on from (the next started within 10 ms) are points. A
  partly loaded replica runs mostly decode steps of one to four sequences between arrivals, and on a
  CPU those cost more in the churn of arrivals and departures than in the grid's clean runs (on the
  development machine a replay's iterations took 1.21x what a fit without them predicted, 1.01x with
  them). Skipped, like the burst, without the hook.

Fit: non-negative least squares of the iteration time on
``[1, tokens, keys read, keys past the knee, prompt square, query x key tokens]``
over all points, weighted by 1 / time (so the error minimised is relative). Tokens,
keys, square and query x key are n, n, n^2, n^2 for a prefill alone; b, b x context,
0, b^2 x context for a decode step; as read from its batch for a burst or trickle iteration.
The knee is searched over key counts
in steps of 256 (the one with the least mean relative error; none unless it
cuts the straight line's error by 5%): the simulator's
:class:`~mixfleet.routing.profiles.IterationFit`. The output file is the
built-in profiles plus this GPU (``--gpu``, ``CPU`` by default), this model
and the measured entry (replacing an older one of the same pair), so a fleet
file can point at it (``profiles: profile.yaml``) or the engine can be
simulated with it directly.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from mixfleet.routing.iterations import IterationTimer, busy_steps, model_runner, step_point
from mixfleet.routing.torch_model import REAL_NOTE, TorchModelConfig


@dataclass(frozen=True)
class Grid:
    prompt_grid: tuple[int, ...] = (16, 64, 128, 256, 512)
    batch_grid: tuple[int, ...] = (1, 4, 16, 32)
    context_grid: tuple[int, ...] = (32, 256, 640)
    decode_tokens: int = 24
    repeats: int = 3
    burst: int = 48
    trickle: int = 70
    trickle_rate: float = 1.8  # requests per second: about 45% of this CPU's capacity for the trickle's mix


QUICK = Grid(prompt_grid=(16, 128, 256), batch_grid=(1, 8), context_grid=(32, 256), decode_tokens=12, repeats=1,
             burst=16, trickle=12, trickle_rate=4.0)


def _run(manager, prompts: list[list[int]], n_out: int) -> list:
    # streamed, as a serving replica asks for them: an update per token costs the engine ~15% of a small
    # decode step (batch 1: 1.33 ms without, 1.62 ms with on the development machine)
    ids = manager.add_requests(prompts, max_new_tokens=n_out, record_timestamps=True, streaming=True)
    got: dict = {}
    deadline = time.monotonic() + 300
    while len(got) < len(ids):
        out = manager.get_result(timeout=1)
        if out is not None and out.is_finished():
            if out.error is not None:
                raise RuntimeError(f"the engine failed a profiling request: {out.error}")
            got[out.request_id] = out
        if time.monotonic() > deadline:
            raise TimeoutError("profiling requests did not finish in 300 s")
    return [got[i] for i in ids]


def _prompt(n: int, salt: int) -> list[int]:
    return [(k * 131 + salt * 17) % 256 for k in range(n)]


def measure(cfg: TorchModelConfig, *, device: str = "cpu", threads: int = 1, kv_tokens: int = 16384,
            max_batch: int = 32, max_batched_tokens: int = 512, grid: Grid = Grid()) -> dict:
    """Run the grid on the real engine; return the points (seconds) and the engine settings."""
    from mixfleet.routing.serve.torch_engine import TorchEngine

    eng = TorchEngine("profile", cfg, kv_tokens=kv_tokens, max_batch=max_batch, max_waiting=1 << 20,
                      max_batched_tokens=max_batched_tokens, device=device, threads=threads)
    mgr = eng.manager
    points: list[dict] = []
    try:
        # warm-up: a burst that runs the largest iterations once. A fresh process pays for its first large
        # allocations (a decode step of 16 sequences over 4,300 keys: 30 ms cold, 10-14 ms after one burst),
        # and a serving replica is warm
        top = min(max_batched_tokens, cfg.max_context // 2)
        _run(mgr, [_prompt(max(1, top - 8 * j), 900 + j) for j in range(max(2, min(16, grid.burst)))], 8)
        for n in grid.prompt_grid:
            if n > max_batched_tokens or n + 1 > cfg.max_context:
                continue
            ts = [o.timestamps[0] - o.created_time
                  for r in range(grid.repeats) for o in _run(mgr, [_prompt(n, r + 1)], 1)]
            points.append({"kind": "prefill", "tokens": n, "kv": 0, "sq": n * n, "time_s": statistics.median(ts)})
        for b in grid.batch_grid:
            for c in grid.context_grid:
                if b > max_batch or b * (c + grid.decode_tokens) > eng.kv_tokens * 0.8 or \
                        c + grid.decode_tokens > cfg.max_context:
                    continue
                steps, ctx = [], []
                for r in range(grid.repeats):
                    outs = _run(mgr, [_prompt(c, 100 * r + j) for j in range(b)], grid.decode_tokens)
                    start = max(o.timestamps[0] for o in outs)  # every sequence is decoding from here on
                    ts = outs[0].timestamps
                    for k in range(1, len(ts)):
                        if ts[k - 1] >= start - 1e-9:
                            steps.append(ts[k] - ts[k - 1])
                            ctx.append(b * (c + k))
                if steps:
                    points.append({"kind": "decode", "tokens": b, "kv": statistics.median(ctx), "sq": 0,
                                   "batch": b, "context": c, "time_s": statistics.median(steps)})
        points += _burst_steps(eng, grid.burst, max_batched_tokens, cfg.max_context)
        points += _trickle_steps(eng, grid.trickle, grid.trickle_rate, max_batched_tokens, cfg.max_context)
    finally:
        eng.close()
    return {"points": points, **eng.settings()}


def burst_requests(n: int, max_batched_tokens: int, max_context: int) -> list[tuple[int, int]]:
    """The burst's requests: (prompt tokens, output tokens), prompts uniform in 16 to the iteration's token
    budget (at most half the context), every output ``max(8, max_context // 16)`` tokens."""
    import random

    rng = random.Random(7)
    top = min(max_batched_tokens, max_context // 2)
    return [(rng.randint(16, top), max(8, max_context // 16)) for _ in range(n)]


def _burst_steps(eng, n: int, max_batched_tokens: int, max_context: int) -> list[dict]:
    """Time every iteration of a burst of ``n`` mixed requests (see module doc); [] without the hook.

    An iteration's time is from the start of its forward pass to the start of the next one: the pass
    itself plus the engine's own bookkeeping around it (scheduling, sampling, the outputs), as a loaded
    replica spends it. The burst keeps the engine busy, so there is no idle gap in between; the last
    iteration gets its pass plus the median bookkeeping of the others.
    """
    runner = model_runner(eng) if n > 0 else None
    if runner is None:
        return []
    reqs = burst_requests(n, max_batched_tokens, max_context)
    with IterationTimer(runner) as timer:
        _run(eng.manager, [_prompt(n_in, 500 + j) for j, (n_in, _) in enumerate(reqs)], reqs[0][1])
    log = timer.stop()
    gaps = [b[0] - a[0] - a[1] for a, b in zip(log, log[1:], strict=False)]
    tail = statistics.median(gaps) if gaps else 0.0
    return [step_point("burst", ql, kl, log[i + 1][0] - t if i + 1 < len(log) else d + tail, d)
            for i, (t, d, ql, kl) in enumerate(log) if ql is not None]


def trickle_requests(n: int, rate: float, max_batched_tokens: int, max_context: int,
                     seed: int = 11) -> list[tuple[float, int, int]]:
    """The trickle's requests: (arrival s, prompt tokens, output tokens), Poisson arrivals at ``rate`` per
    second, lengths log-uniform in 8-400 and 4-200 tokens (clipped to the context)."""
    import random

    rng = random.Random(seed)
    top_in = max(8, min(400, max_batched_tokens, max_context // 2))
    top_out = max(4, min(200, max_context // 4))
    reqs, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate)
        reqs.append((t, int(math.exp(rng.uniform(math.log(8), math.log(top_in)))),
                     int(math.exp(rng.uniform(math.log(4), math.log(top_out))))))
    return reqs


def _trickle_steps(eng, n: int, rate: float, max_batched_tokens: int, max_context: int) -> list[dict]:
    """Time the iterations of ``n`` requests arriving at ``rate`` per second (see module doc); those
    followed by an idle gap (the engine waited for an arrival) are not points. [] without the hook."""
    import asyncio

    runner = model_runner(eng) if n > 0 else None
    if runner is None:
        return []
    reqs = trickle_requests(n, rate, max_batched_tokens, max_context)
    t = reqs[-1][0]

    async def one(t0: float, at: float, n_in: int, n_out: int) -> None:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        async for _ in eng.generate(n_in, n_out, _prompt(n_in, n_in + n_out)):
            pass

    async def stream() -> None:
        t0 = time.monotonic() + 0.1
        await asyncio.wait_for(asyncio.gather(*(one(t0, *r) for r in reqs)), timeout=t + 300)

    with IterationTimer(runner) as timer:
        asyncio.run(stream())
    return busy_steps(timer.stop(), "trickle")


def _features(p: dict, knee: float = math.inf) -> list[float]:
    """[1, tokens, keys, keys past the knee, sq, query x key tokens] of a point (grid points derive the
    keys: a prefill alone reads its n keys, a decode step the batch's b x context)."""
    keys = p.get("keys")
    if keys is None:
        keys = p["tokens"] if p["kind"] == "prefill" else (p["qkv"] / p["tokens"] if "qkv" in p else p["kv"])
    qkv = p.get("qkv", p["tokens"] * keys)
    return [1.0, p["tokens"], keys, max(0.0, keys - knee), p["sq"], qkv]


def predict_ms(coef: dict, points: list[dict]) -> list[float]:
    """The iteration time (ms) that the fit ``coef`` (from :func:`fit`) gives each point."""
    knee = math.inf if coef.get("kv_knee") is None else float(coef["kv_knee"])
    c = (coef["overhead_ms"], coef["per_token_ms"], coef["per_kv_token_ms"], coef.get("per_kv_over_knee_ms", 0.0),
         coef["per_prompt_sq_ms"], coef["per_q_kv_ns"] / 1e6)
    return [sum(x * k for x, k in zip(_features(p, knee), c, strict=True)) for p in points]


def fit(points: list[dict]) -> dict:
    """Non-negative least squares of time (ms) on the features of :func:`_features`, each point weighted by
    1 / its time (relative error), for the knee (a grid of key counts, or none) with the least mean relative
    error; with each point's error."""
    import numpy as np
    from scipy.optimize import nnls

    y = np.array([p["time_s"] * 1e3 for p in points])
    w = 1.0 / np.maximum(y, 1e-6)  # relative error: small iterations matter as much as large ones

    def solve(knee: float):
        a = np.array([_features(p, knee) for p in points])
        a[:, 5] /= 1e6  # ns per query x key token, in ms: a column on the scale of the others
        coef, _ = nnls(a * w[:, None], y * w)
        pred = a @ coef
        return float(np.mean(np.abs(pred - y) / y)), coef, pred

    top = max(_features(p)[2] for p in points)
    linear = solve(math.inf)[0]
    err, knee = min(((solve(float(k))[0], float(k)) for k in range(256, int(top), 256)), default=(linear, math.inf))
    if not err < 0.95 * linear - 1e-3:  # a knee must earn its place: 5% less error than a straight line
        knee = math.inf
    err, coef, pred = solve(knee)
    errors = [float(abs(pr - t) / t) for pr, t in zip(pred, y, strict=True)]
    return {"overhead_ms": float(coef[0]), "per_token_ms": float(coef[1]), "per_kv_token_ms": float(coef[2]),
            "kv_knee": None if math.isinf(knee) else int(knee),
            "per_kv_over_knee_ms": 0.0 if math.isinf(knee) else float(coef[3]),
            "per_prompt_sq_ms": float(coef[4]), "per_q_kv_ns": float(coef[5]),
            "mean_abs_rel_error": float(np.mean(errors)), "max_abs_rel_error": float(np.max(errors)),
            "burst_steps": sum(1 for p in points if p["kind"] == "step" and p.get("phase", "burst") == "burst"),
            "trickle_steps": sum(1 for p in points if p.get("phase") == "trickle"),
            "served_steps": sum(1 for p in points if p.get("phase") == "served"), "predicted_ms": [float(x) for x in pred]}


def profile_book(measured: dict, coef: dict, *, gpu: str, base=None) -> dict:
    """The built-in profiles (or ``base``) plus ``gpu``, the model and the measured entry, as plain data."""
    from mixfleet.routing.profiles import load_profiles
    from mixfleet.routing.torch_model import TorchModelConfig

    book = (base or load_profiles()).model_dump()
    cfg = TorchModelConfig(**measured["model"])
    if gpu not in book["gpus"]:
        book["gpus"][gpu] = {"ray_accelerator": gpu, "memory_gb": 1.0, "mem_bandwidth_gbs": 1.0, "fp16_tflops": 1.0,
                             "price_per_hour": 0.0, "bw_efficiency": 1.0, "flops_efficiency": 1.0}
    book["models"][cfg.name] = cfg.model_profile()
    f = {k: round(coef.get(k, 0.0), 6) for k in ("overhead_ms", "per_token_ms", "per_kv_token_ms",
                                                  "per_prompt_sq_ms", "per_q_kv_ns")}
    if coef.get("kv_knee") is not None:
        f.update(kv_knee=int(coef["kv_knee"]), per_kv_over_knee_ms=round(coef["per_kv_over_knee_ms"], 6))
    qkv_ms = f["per_q_kv_ns"] / 1e6

    def keys_ms(n: float) -> float:
        return f["per_kv_token_ms"] * n + f.get("per_kv_over_knee_ms", 0.0) * max(0.0, n - f.get("kv_knee", n))

    step1 = f["overhead_ms"] + f["per_token_ms"] + keys_ms(256) + qkv_ms * 256
    prefill = 256 / ((f["overhead_ms"] + 256 * f["per_token_ms"] + keys_ms(256)
                      + 256 * 256 * (f["per_prompt_sq_ms"] + qkv_ms)) / 1e3)
    entry = {"gpu": gpu, "model": cfg.name, "decode_step_ms": round(step1, 4), "prefill_tok_s": round(prefill, 1),
             "fit": f, "kv_tokens": measured["kv_tokens"]}
    book["measured"] = [m for m in book["measured"] if (m["gpu"], m["model"]) != (gpu, cfg.name)] + [entry]
    for m in book["measured"]:  # keep the file minimal: no nulls
        for k in [k for k, v in m.items() if v is None]:
            del m[k]
    return book


def write_profile(path, book: dict, measured: dict, coef: dict) -> None:
    """Write the profiles file (atomically) with a header saying what was measured and how."""
    import yaml

    from mixfleet.platform.output import atomic_write_text

    pts = measured["points"]
    head = [f"# Profiles with a MEASURED entry for the real engine ({REAL_NOTE}), written by",
            "# `mixfleet routing profile`. Everything else is the built-in (emulated, roofline) profiles.",
            f"# device {measured['device']}, {measured['threads']} thread(s), kv_tokens {measured['kv_tokens']}, "
            f"max_batch {measured['max_batch']}, max_batched_tokens {measured['max_batched_tokens']}",
            f"# {len(pts)} points; fit mean |rel. error| {coef['mean_abs_rel_error']:.1%}, "
            f"max {coef['max_abs_rel_error']:.1%}",
            "#   kind     tokens      keys   measured_ms  fitted_ms"]
    pairs = list(zip(pts, coef["predicted_ms"], strict=True))
    many = ("trickle", "served")  # thousands of single iterations: summed up, not listed
    head += [f"#   {p.get('phase', p['kind']):<8} {p['tokens']:>6} {_features(p)[2]:>9.0f} {p['time_s'] * 1e3:>12.2f} "
             f"{pr:>10.2f}" for p, pr in pairs if p.get("phase") not in many]
    for phase in many:
        got = [(p["time_s"] * 1e3, pr) for p, pr in pairs if p.get("phase") == phase]
        if got:
            err = statistics.fmean(abs(pr - t) / t for t, pr in got)
            head.append(f"#   {phase}: {len(got)} iterations, {sum(t for t, _ in got):.0f} ms measured, "
                        f"{sum(pr for _, pr in got):.0f} ms fitted, mean |rel. error| {err:.1%}")
    atomic_write_text(path, "\n".join(head) + "\n" + yaml.safe_dump(book, sort_keys=False))
