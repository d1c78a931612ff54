"""The REAL engine (engine: torch) without Ray: transformers' continuous batching over a seeded random
tiny Llama (real compute, random weights), and the measured profile the simulator reads.

No assert depends on timing: tokens are compared with an offline ``generate``, and the profile fit is
checked on synthetic points.
"""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import pytest

from mixfleet.routing.torch_model import encode_text, model_config, offline_generate

PROMPTS = ["Hello, fleet!", "routing across mixed GPUs " * 6, "x"]


def _engine(seed: int = 0, **kw):
    from mixfleet.routing.serve.torch_engine import TorchEngine

    return TorchEngine(f"cpu-{seed}", model_config("tiny-llama", seed=seed), kv_tokens=4096, max_batch=8,
                       max_batched_tokens=64, device="cpu", **kw)


async def _collect(engine, ids, max_tokens, output_tokens=None):
    toks, last = [], None
    async for chunk in engine.generate(len(ids), max_tokens, ids, output_tokens):
        toks += chunk.tokens
        last = chunk
    return toks, last


def test_batched_requests_equal_offline_generate_and_seeds_change_the_tokens():
    async def run():
        a, b = _engine(0), _engine(1)
        try:
            ids = [encode_text(p) for p in PROMPTS]
            # concurrent requests share iterations (continuous batching; the long prompt is chunked: 64 tokens
            # per iteration) and still give each prompt exactly its own greedy tokens
            got = await asyncio.gather(*(_collect(a, x, 12) for x in ids), _collect(a, ids[1], 30, 5))
            other = await _collect(b, ids[0], 12)
            return ids, got, other, a.stats()
        finally:
            a.close()
            b.close()

    ids, got, other, stats = asyncio.run(run())
    cfg0 = model_config("tiny-llama", seed=0)
    model0 = None
    from mixfleet.routing.torch_model import build_model

    model0 = build_model(cfg0)
    for x, (toks, last) in zip(ids, got[:3], strict=True):
        assert toks == offline_generate(cfg0, x, 12, model0)
        assert last.done and last.e2e_s >= last.ttft_s > 0
    assert got[3][0] == got[1][0][:5]  # the hidden true length stops it early: the same first 5 tokens
    assert other[0] != got[0][0]  # another weights seed, other tokens
    assert other[0] == offline_generate(model_config("tiny-llama", seed=1), ids[0], 12)
    assert stats["completed"] == 4 and stats["tokens"] == 12 * 3 + 5


def test_refuses_too_long_requests_and_overload_and_a_dead_loop_fails_the_health_check():
    from mixfleet.errors import ClusterError, InputError
    from mixfleet.routing.serve.emulated_engine import EngineOverloaded

    async def run():
        eng = _engine(0, max_waiting=1)
        try:
            with pytest.raises(InputError, match="exceed"):
                await _collect(eng, [65] * 1000, 100)
            with pytest.raises(InputError, match="byte"):
                await _collect(eng, [300], 4)
            first = eng.generate(1, 4, [65], None)
            pending = asyncio.ensure_future(anext(first))
            await asyncio.sleep(0)  # submitted; its first token cannot arrive before this task yields again
            with pytest.raises(EngineOverloaded):
                await _collect(eng, [66], 4)
            assert (await pending).first
            await first.aclose()
            eng.check_health()
        finally:
            eng.close()
        with pytest.raises(ClusterError, match="generation loop stopped"):  # Serve's health check restarts it
            eng.check_health()

    asyncio.run(run())


def _synthetic_points(t0=5.0, tok=0.1, kv=0.01, sq=0.001):
    """Grid points timed by the fitted model itself: keys read are n for a prefill, b x context for a decode."""
    pts = [{"kind": "prefill", "tokens": n, "kv": 0, "sq": n * n} for n in (16, 64, 256, 512)]
    pts += [{"kind": "decode", "tokens": b, "kv": b * c, "sq": 0} for b in (1, 4, 16) for c in (32, 256, 640)]
    for p in pts:
        keys = p["tokens"] if p["kind"] == "prefill" else p["kv"]
        p["time_s"] = (t0 + tok * p["tokens"] + kv * keys + sq * p["sq"]) / 1e3
    return pts


def test_profile_fit_and_the_simulator_uses_the_measured_engine(tmp_path):
    from mixfleet.routing import profiler
    from mixfleet.routing.fleet import load_fleet
    from mixfleet.routing.profiles import FittedIterationModel, load_profiles

    pts = _synthetic_points()
    coef = profiler.fit(pts)
    assert coef["overhead_ms"] == pytest.approx(5.0, rel=1e-3)
    assert coef["per_kv_token_ms"] == pytest.approx(0.01, rel=1e-3) and coef["max_abs_rel_error"] < 1e-3
    assert coef["kv_knee"] is None  # a linear cost has no knee
    measured = {"points": pts, "device": "cpu", "threads": 1, "kv_tokens": 8192, "max_batch": 16,
                "max_batched_tokens": 512, "model": model_config("tiny-llama").model_dump()}
    out = tmp_path / "profile.yaml"
    profiler.write_profile(out, profiler.profile_book(measured, coef, gpu="MyCPU"), measured, coef)
    book = load_profiles(out)
    perf = book.iteration_model("MyCPU", "tiny-llama")
    assert isinstance(perf, FittedIterationModel) and "A100-80GB" in book.gpus  # built-ins kept
    assert perf.decode_step(4, 1000) == pytest.approx((5.0 + 0.4 + 10.0) / 1e3, rel=1e-4)
    assert perf.prefill_time(100) == pytest.approx((5.0 + 10.0 + 1.0 + 10.0) / 1e3, rel=1e-4)
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(f"model: tiny-llama\nprofiles: {out}\npools:\n  - gpu: MyCPU\n    engine: torch\n")
    fleet = load_fleet(fleet_file)
    assert fleet.replicas[0].kv_tokens == 8192 and fleet.replicas[0].engine == "torch"


def test_the_fit_finds_where_reading_keys_gets_dearer_and_the_simulator_charges_it(tmp_path):
    """Past a number of keys an iteration no longer fits the CPU's caches and each key costs more (measured:
    see IterationFit). The fit finds that knee from the points, the profile file keeps it, and the
    simulator's closed-form decode run charges it step by step across the knee."""
    from mixfleet.routing import profiler
    from mixfleet.routing.profiles import load_profiles, run_time

    knee, over = 3000, 0.02
    pts = _synthetic_points(sq=0.0)
    pts += [{"kind": "decode", "tokens": b, "kv": b * c, "sq": 0} for b in (24, 32) for c in (64, 128, 200, 320)]
    for p in pts:
        keys = p["tokens"] if p["kind"] == "prefill" else p["kv"]
        p["time_s"] = (5.0 + 0.1 * p["tokens"] + 0.01 * keys + over * max(0, keys - knee)) / 1e3
    coef = profiler.fit(pts)
    assert abs(coef["kv_knee"] - knee) <= 256 and coef["per_kv_over_knee_ms"] > 0
    assert coef["mean_abs_rel_error"] < 0.01
    # the fit prices other iterations (the fidelity benchmark's replay) as it priced its own points
    assert profiler.predict_ms(coef, pts) == pytest.approx(coef["predicted_ms"], rel=1e-9)
    linear = profiler.fit([p for p in pts if (p["tokens"] if p["kind"] == "prefill" else p["kv"]) < knee])
    assert linear["kv_knee"] is None

    measured = {"points": pts, "device": "cpu", "threads": 1, "kv_tokens": 16384, "max_batch": 32,
                "max_batched_tokens": 512, "model": model_config("tiny-llama").model_dump()}
    out = tmp_path / "profile.yaml"
    profiler.write_profile(out, profiler.profile_book(measured, coef, gpu="MyCPU"), measured, coef)
    perf = load_profiles(out).iteration_model("MyCPU", "tiny-llama")
    below, past = perf.decode_step(16, 2000), perf.decode_step(16, 6000)
    assert past - below > 4000 * 0.01 / 1e3 * 1.5  # each key past the knee costs more than one below it
    # 300 steps of 16 sequences from 1,000 to 5,800 context tokens: the closed form equals the step sum
    steps = sum(perf.decode_step(16, 1000 + 16 * i) for i in range(300))
    assert run_time(perf.decode_lines(16, 1000, 16), 300) == pytest.approx(steps, rel=1e-9)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
                    reason="glibc's malloc on Linux only")
def test_a_cpu_engine_keeps_freed_activations_instead_of_returning_them_each_iteration():
    """Under glibc's defaults every freed multi-MiB activation goes back to the OS and is faulted in again on
    the next iteration (a decode step 2-3x slower in a fresh replica, see torch_engine). With the engine up,
    an 8 MiB buffer freed stays in the process for the next iteration."""
    import torch

    eng = _engine()
    try:
        assert eng.kept_freed_memory
        x = torch.ones(2 << 20)  # 8 MiB of float32, every page touched
        held = _rss_kib()
        del x
        assert held - _rss_kib() < 4096
    finally:
        eng.close()


def test_the_profile_command_measures_the_engine_and_writes_a_profile_a_fleet_can_use(cli, tmp_path):
    """`mixfleet routing profile` end to end on this CPU with a small iteration budget (quick grid): the file
    it writes has the measured entry, and the simulator times the engine from it."""
    import json

    from mixfleet.routing.profiles import FittedIterationModel, load_profiles

    out = tmp_path / "p.yaml"
    r = cli("routing", "profile", "--device", "cpu", "--quick", "--kv-tokens", "4096", "--max-batch", "8",
            "--max-batched-tokens", "64", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["engine"] == "torch" and "random weights" in got["note"] and got["points"]
    assert {p.get("phase", p["kind"]) for p in got["points"]} == {"prefill", "decode", "burst", "trickle"}
    assert "trickle" in out.read_text()  # the file's header lists every point it was fitted on
    perf = load_profiles(out).iteration_model("CPU", "tiny-llama")
    assert isinstance(perf, FittedIterationModel) and perf.kv_tokens == 4096
    assert 0 < perf.decode_step(1, 64) < perf.decode_step(8, 2048)


def test_profile_command_refuses_an_unknown_engine(cli, tmp_path):
    r = cli("routing", "profile", "--engine", "vllm", "--out", str(tmp_path / "p.yaml"))
    assert r.returncode != 0 and "vllm" in r.error_line and not (tmp_path / "p.yaml").exists()


def test_a_mixed_iteration_pays_for_attention_over_the_whole_batch():
    """The fit learns a query x key term from timed burst iterations, and the simulator charges it: an
    iteration mixing prompt chunks with decodes costs more than its parts (as transformers' CPU engine does)."""
    from mixfleet.routing import profiler
    from mixfleet.routing.profiles import FittedIterationModel, IterationFit, MeasuredProfile, load_profiles

    truth = {"t0": 5.0, "tok": 0.1, "kv": 0.01, "qkv_ns": 100.0}
    pts = _synthetic_points(sq=0.0)
    for p in pts:  # the grid's own shapes pay the term too
        qkv = p["tokens"] * (p["tokens"] if p["kind"] == "prefill" else p["kv"])
        p["time_s"] += truth["qkv_ns"] * qkv / 1e9
    for q, dec_kv, keys in ((512, 6000, 6500), (300, 3000, 3400), (129, 5000, 5100), (64, 900, 1000)):
        ms = truth["t0"] + truth["tok"] * q + truth["kv"] * keys + truth["qkv_ns"] * q * keys / 1e6
        pts.append({"kind": "step", "tokens": q, "kv": dec_kv, "keys": keys, "sq": 0, "qkv": q * keys,
                    "time_s": ms / 1e3})
    coef = profiler.fit(pts)
    assert coef["per_q_kv_ns"] == pytest.approx(100.0, rel=1e-3) and coef["burst_steps"] == 4
    assert coef["max_abs_rel_error"] < 1e-3

    book = load_profiles()
    entry = MeasuredProfile(gpu="A100-80GB", model=next(iter(book.models)), decode_step_ms=1.0, prefill_tok_s=1.0,
                            fit=IterationFit(overhead_ms=5.0, per_token_ms=0.1, per_kv_token_ms=0.01,
                                             per_q_kv_ns=100.0))
    perf = FittedIterationModel(entry.gpu, entry.model, book.gpu(entry.gpu), book.model(entry.model), entry)
    # 29 decodes over 6,000 context tokens plus a 483-token chunk that reads 483 keys
    mixed = perf.mixed_time(29, 6000, 483, 0.0, 483)
    assert mixed == pytest.approx((5.0 + 0.1 * 512 + 0.01 * 6483 + 100e-6 * 512 * 6483) / 1e3, rel=1e-9)
    assert mixed > perf.decode_step(29, 6000) + perf.prefill_time(483)  # more than its parts


def test_the_profiler_times_mixed_iterations_of_the_real_engine():
    """The burst hook still finds transformers' model runner: without it the profile silently loses the
    mixed iterations that decide a loaded replica's speed. Counts only, no timing assert."""
    from mixfleet.routing import profiler

    eng = _engine()
    try:
        steps = profiler._burst_steps(eng, 6, max_batched_tokens=64, max_context=256)
    finally:
        eng.close()
    assert steps and all(s["kind"] == "step" and s["time_s"] > 0 for s in steps)
    mixed = [s for s in steps if s["kv"] > 0 and s["sq"] > 0]  # decodes and a prompt chunk in one iteration
    assert mixed and all(s["qkv"] >= s["tokens"] * s["kv"] for s in mixed)


def test_the_profiler_times_a_trickle_of_arrivals_through_the_serving_path():
    """The trickle phase streams requests through the engine's own generate() as they arrive and keeps the
    iterations the engine ran straight on from: a partly loaded replica's small decode steps, which the
    grid's clean runs underprice. Counts only, no timing assert."""
    from mixfleet.routing import profiler

    eng = _engine(max_waiting=64)
    try:
        steps = profiler._trickle_steps(eng, 10, 20.0, max_batched_tokens=64, max_context=256)
    finally:
        eng.close()
    assert steps and all(s["kind"] == "step" and s["phase"] == "trickle" and s["time_s"] > 0 for s in steps)
    assert any(s["tokens"] == s["sequences"] <= 4 for s in steps)  # a decode-only step of a few sequences
    assert profiler.fit(steps + _synthetic_points(sq=0.0))["trickle_steps"] == len(steps)


def test_a_wait_with_sequences_in_the_engine_is_a_stall_and_a_wait_for_new_work_is_not():
    """The replica's timed iterations tell a stall (the next iteration continues a sequence, so it was in
    the engine during the wait) from idling until a request arrives, and each fit point keeps the share of
    its time spent in the forward pass."""
    from mixfleet.routing import iterations

    log = [(0.000, 0.004, [5], [5]),  # a new prompt
           (0.005, 0.004, [1], [6]),  # its first decode, straight on
           (0.050, 0.004, [1], [7]),  # 41 ms later the same sequence goes on: a stall
           (0.200, 0.004, [3], [3]),  # a new request after the engine ran dry: not a stall
           (0.205, 0.004, [1, 1], [8, 4])]
    st = iterations.stalls(log)
    assert st["count"] == 1 and st["seconds"] == pytest.approx(0.041) and st["at_s"] == [[0.05, 0.041]]
    points = iterations.busy_steps(log, "served")
    assert [p["time_s"] for p in points] == pytest.approx([0.005, 0.005])  # the two followed by a wait dropped
    assert all(p["forward_s"] == pytest.approx(0.004) for p in points)
    assert iterations.stalls([]) == {"count": 0, "seconds": 0, "longest_s": 0.0, "at_s": []}
