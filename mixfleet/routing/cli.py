"""``mixfleet routing simulate | compare | plan`` (and ``serve``, registered by the live router).

Everything here runs the discrete-event simulator: GPUs are EMULATED from
calibrated roofline profiles (see profiles.yaml), and every command says so.
With ``--json`` one JSON object goes to stdout (the CLI contract).
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

from mixfleet.errors import InputError
from mixfleet.platform.output import check_writable, console, emit_json, print_table

app = typer.Typer(help="Simulate, plan and serve heterogeneity-aware LLM routing.", add_completion=False,
                  no_args_is_help=True)

EMULATED = "simulated: GPUs EMULATED from roofline profiles calibrated to published figures"


def _say(text: str) -> None:
    console().print(text)


def _fleet(path: str):
    from mixfleet.routing.fleet import load_fleet

    return load_fleet(path)


def _engine_opts(cap_rule: str, oracle_lengths: bool, prefill_first: bool, kv_reserve: str) -> dict:
    """The information and engine model options of the simulator, checked (see docs/routing.md)."""
    from mixfleet.errors import unknown_name
    from mixfleet.routing.engine import RESERVE
    from mixfleet.routing.lengths import CAP_RULES

    rule = "oracle" if oracle_lengths else cap_rule.strip().lower()
    if rule not in CAP_RULES:
        raise unknown_name("cap rule", cap_rule, CAP_RULES)
    if kv_reserve not in RESERVE:
        raise unknown_name("KV reservation", kv_reserve, RESERVE)
    return {"cap_rule": rule, "chunked": not prefill_first, "reserve": kv_reserve}


CAP_HELP = ("client max_tokens cap the router sees: app (1024 code / 2048 conversation), pow2 (true length "
            "rounded up to a power of two), oracle (= the true length)")
ORACLE_HELP = "ablation: policies see the true output length (same as --cap-rule oracle)"
PREFILL_FIRST_HELP = "engine: prefill-first iterations instead of chunked prefill (the default)"
RESERVE_HELP = "engine KV admission: prompt (grow and preempt, as vLLM) or cap (reserve prompt + cap)"


def _check_load(values: list[float]) -> list[float]:
    for v in values:
        if not (0 < v <= 10):
            raise InputError(f"load {v} is out of range", "give a fraction of capacity in (0, 10], e.g. 0.7")
    return values


@app.command()
def simulate(
    trace: str = typer.Option(..., "--trace", help="trace file (.csv Azure / .jsonl Mooncake), azure-conv, "
                              "azure-code, or poisson:n=..,rate=.. / gamma:.. / diurnal:.."),
    fleet: str = typer.Option(..., "--fleet", help="fleet.yaml"),
    policy: str = typer.Option("least_work_left", "--policy", help="round_robin, pow2, least_outstanding, "
                               "least_work_left_blind, kv_aware, least_work_left or ilp"),
    load: float = typer.Option(None, "--load", help="scale arrivals to this fraction of the fleet's capacity"),
    seed: int = typer.Option(0, "--seed", help="seed of the policy RNG and of the trace's size shuffle"),
    limit: int = typer.Option(None, "--limit", min=1, help="use only the first N requests"),
    cap_rule: str = typer.Option("app", "--cap-rule", help=CAP_HELP),
    oracle_lengths: bool = typer.Option(False, "--oracle-lengths", help=ORACLE_HELP),
    prefill_first: bool = typer.Option(False, "--prefill-first", help=PREFILL_FIRST_HELP),
    kv_reserve: str = typer.Option("prompt", "--kv-reserve", help=RESERVE_HELP),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Simulate one routing policy on a fleet over a trace."""
    from mixfleet.routing.compare import seeded
    from mixfleet.routing.policies import check_policy_name
    from mixfleet.routing.runner import Workload, prepare
    from mixfleet.routing.runner import simulate as run

    name = check_policy_name(policy)
    if load is not None:
        _check_load([load])
    opts = _engine_opts(cap_rule, oracle_lengths, prefill_first, kv_reserve)
    fl = _fleet(fleet)
    wl = prepare(fl, trace, load, limit)
    wl = Workload(seeded(wl.trace, seed), wl.stats, wl.capacity_req_s, load, wl.time_scale)
    _say(f"[dim]{EMULATED}[/dim]")
    _say(f"fleet {fl.describe()}: capacity {wl.capacity_req_s:.2f} req/s on this trace "
         f"(mean prompt {wl.stats.prompt_mean:.0f}, output {wl.stats.output_mean:.0f} tokens); "
         f"offered {wl.rate_req_s:.2f} req/s")
    _say(f"information: cap rule {opts['cap_rule']}; engine: "
         f"{'chunked prefill' if opts['chunked'] else 'prefill-first'}, KV reserve {opts['reserve']}")
    res = run(fl, wl.trace, name, load=load, seed=seed, workload=wl, **opts)
    s = res.summary
    out = {"policy": name, "trace": trace, "fleet": fl.describe(), "emulated": True, "load": load, "seed": seed,
           "capacity_req_s": wl.capacity_req_s, "offered_req_s": wl.rate_req_s, "clipped": res.clipped,
           **{k: v for k, v in s.items()}, "oracle_floor": res.oracle, "policy_stats": res.extra}
    if json_out:
        emit_json(out)
        return
    rows = [(m, s[f"p50_{m}_s"], s[f"p90_{m}_s"], s[f"p99_{m}_s"], s[f"p999_{m}_s"]) for m in ("e2e", "ttft", "tpot")]
    rows.append(("oracle e2e", res.oracle["p50_e2e_s"], res.oracle["p90_e2e_s"], res.oracle["p99_e2e_s"],
                 res.oracle["p999_e2e_s"]))
    print_table(f"{name}: latency (s), {s['requests']} requests", ["metric", "p50", "p90", "p99", "p99.9"], rows)
    util = ", ".join(f"{g} {u:.0%}" for g, u in s["utilisation"].items())
    _say(f"SLO attainment {s['slo_attainment']:.1%}; throughput {s['throughput_tok_s']:.0f} tok/s; "
         f"cost ${s['cost_usd']:.2f}; busy: {util}" + (f"; {res.clipped} requests clipped to the context" if
                                                       res.clipped else ""))


@app.command()
def compare(
    trace: str = typer.Option(..., "--trace", help="trace file or bundled name (see simulate --help)"),
    fleet: str = typer.Option(..., "--fleet", help="fleet.yaml"),
    load: list[float] = typer.Option([0.5, 0.7, 0.85], "--load", help="loads (repeatable)"),
    policy: list[str] = typer.Option([], "--policy", help="policies (repeatable; default: all)"),
    seeds: int = typer.Option(1, "--seeds", min=1, max=100, help="seeds 0..N-1 per load"),
    limit: int = typer.Option(None, "--limit", min=1, help="use only the first N requests"),
    cap_rule: str = typer.Option("app", "--cap-rule", help=CAP_HELP),
    oracle_lengths: bool = typer.Option(False, "--oracle-lengths", help=ORACLE_HELP),
    prefill_first: bool = typer.Option(False, "--prefill-first", help=PREFILL_FIRST_HELP),
    kv_reserve: str = typer.Option("prompt", "--kv-reserve", help=RESERVE_HELP),
    plot_path: str = typer.Option(None, "--plot", help="write a PNG: latency CDFs and P99 against load"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Compare policies side by side over loads and seeds."""
    from mixfleet.routing.compare import compare as run_compare
    from mixfleet.routing.compare import plot
    from mixfleet.routing.policies import POLICIES, check_policy_name

    names = [check_policy_name(p) for p in policy] or list(POLICIES)
    _check_load(load)
    opts = _engine_opts(cap_rule, oracle_lengths, prefill_first, kv_reserve)
    if plot_path and not plot_path.lower().endswith(".png"):
        raise InputError(f"plot path '{plot_path}' must end with .png", "e.g. --plot compare.png")
    check_writable(plot_path, "--plot")
    fl = _fleet(fleet)
    _say(f"[dim]{EMULATED}[/dim]")
    from rich.progress import Progress

    total = len(load) * seeds * len(names)
    with Progress(console=console(), transient=True, disable=json_out) as bar:
        task = bar.add_task("simulating", total=total)

        def step(text: str) -> None:
            bar.update(task, advance=1, description=text)

        cmp = run_compare(fl, trace, names, load, list(range(seeds)), limit=limit, progress=step,
                          keep_results=bool(plot_path), **opts)
    if plot_path:
        plot(cmp, plot_path, title=f"{trace} on {fl.describe()}")
    out = cmp.to_json()
    if json_out:
        emit_json(out)
        return
    _say(f"fleet {fl.describe()}: capacity {cmp.capacity_req_s:.2f} req/s on {trace}")
    rows = []
    for run in cmp.runs:
        for name, v in run["policies"].items():
            rows.append((run["load"], run["seed"], name, v["p50_e2e_s"], v["p99_e2e_s"], v["p99_ttft_s"],
                         v["p99_tpot_s"], v["slo_attainment"], v["throughput_tok_s"], v["cost_usd"]))
        o = run["oracle_floor"]
        rows.append((run["load"], run["seed"], "oracle floor", o["p50_e2e_s"], o["p99_e2e_s"], o["p99_ttft_s"],
                     None, None, None, None))
    print_table("routing policies (simulated)", ["load", "seed", "policy", "p50 e2e s", "p99 e2e s", "p99 ttft s",
                                                 "p99 tpot s", "SLO", "tok/s", "cost $"], rows)
    if plot_path:
        _say(f"plot: {plot_path}")


@app.command()
def plan(
    fleet: str = typer.Option(..., "--fleet", help="fleet.yaml"),
    trace: str = typer.Option(..., "--trace", help="trace whose class mix to plan for"),
    load: float = typer.Option(None, "--load", help="scale the trace's rate to this fraction of capacity"),
    provision_: bool = typer.Option(False, "--provision", help="size a fleet instead (Mélange-style): the "
                                    "cheapest GPU counts that meet the SLO"),
    target_util: float = typer.Option(0.8, "--target-util", min=0.05, max=1.0,
                                      help="with --provision: utilisation each GPU may reach"),
    limit: int = typer.Option(None, "--limit", min=1, help="use only the first N requests"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Solve the routing ILP for a fleet and a trace's class mix, and print the plan."""
    import time

    from mixfleet.routing.ilp import PlanSolver, provision
    from mixfleet.routing.ilp_policy import full_mix, mix_from_workload
    from mixfleet.routing.plan import build_problem
    from mixfleet.routing.runner import prepare

    if load is not None:
        _check_load([load])
    fl = _fleet(fleet)
    wl = prepare(fl, trace, load, limit)
    mix = mix_from_workload(wl)
    _say(f"[dim]{EMULATED}[/dim]")
    if provision_:
        out = {"mode": "provision", "trace": trace, "model": fl.model, "rate_req_s": wl.rate_req_s,
               **provision(fl, mix, target_util=target_util)}
        if json_out:
            emit_json(out)
            return
        print_table(f"cheapest fleet for {wl.rate_req_s:.2f} req/s of {trace} at <= {target_util:.0%} busy",
                    ["GPU type", "count"], sorted(out["counts"].items()))
        _say(f"cost ${out['cost_per_hour']:.2f}/h; best single GPU type ${out['best_single_type_cost_per_hour']:.2f}/h"
             f" (saving {out['saving_vs_best_single']:.0%}); solve {out['solve_time_s'] * 1e3:.0f} ms")
        return
    t0 = time.perf_counter()
    solver = PlanSolver(build_problem(fl, full_mix(mix.grid, mix, mix.total_rate())))
    p = solver.solve()
    total_s = time.perf_counter() - t0
    out = {"mode": "route", "trace": trace, "fleet": fl.describe(), "capacity_req_s": wl.capacity_req_s,
           "rate_req_s": wl.rate_req_s, **p.to_dict(), "total_time_s": total_s}
    rates = dict(zip(mix.classes, mix.rate, strict=True))
    out["classes"] = [dict(c, rate_req_s=rates.get(cls, 0.0)) for c, cls in zip(out["classes"], p.classes, strict=True)
                      if cls in rates]
    if json_out:
        emit_json(out)
        return
    rows = [(c["class"], c["rate_req_s"], *[c["weights"].get(g, 0.0) for g in p.groups]) for c in out["classes"]]
    print_table(f"plan: share of each class per GPU pool ({wl.rate_req_s:.2f} req/s)", ["class", "req/s", *p.groups],
                rows)
    util = ", ".join(f"{g} {u:.0%}" for g, u in zip(p.groups, p.utilisation, strict=True))
    _say(f"predicted utilisation: {util}; status {p.status}; solve {p.solve_time_s * 1e3:.1f} ms "
         f"(build {p.build_time_s * 1e3:.0f} ms)")


@app.command()
def profile(
    out: str = typer.Option(..., "--out", help="profiles file to write (YAML): built-in profiles + the measured entry"),
    engine: str = typer.Option("torch", "--engine", help="engine to profile (only the real engine: torch)"),
    model_config: str = typer.Option("tiny-llama", "--model-config", help="built-in model name or a model YAML"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    gpu: str = typer.Option(None, "--gpu", help="GPU type name for the entry (default: CPU, or CUDA on a GPU)"),
    threads: int = typer.Option(1, "--threads", min=1, max=256, help="torch CPU threads"),
    kv_tokens: int = typer.Option(16384, "--kv-tokens", min=256, help="KV-cache size of the engine (tokens)"),
    max_batch: int = typer.Option(32, "--max-batch", min=1, max=4096, help="sequences per iteration"),
    max_batched_tokens: int = typer.Option(512, "--max-batched-tokens", min=16, help="tokens per iteration"),
    quick: bool = typer.Option(False, "--quick", help="a small grid, one repeat (tests, smoke checks)"),
    served: str = typer.Option(None, "--served", help="base URL of a running `mixfleet routing serve` "
                               "(http://127.0.0.1:PORT): profile its real-engine replicas as they serve"),
    address: str = typer.Option("auto", "--address", help="with --served: the Ray cluster the router runs on"),
    replica: list[str] = typer.Option(None, "--replica", help="with --served: only this replica (repeatable)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Measure the real engine (real compute, random weights) and write a measured profile for the simulator.

    With --served the profiler's burst and trickle go through a running router's HTTP API while its
    real-engine replicas time their own iterations (their own settings; the engine options here are unused)."""
    from mixfleet.errors import unknown_name
    from mixfleet.routing import profiler
    from mixfleet.routing.torch_model import REAL_NOTE, pick_device
    from mixfleet.routing.torch_model import model_config as load_model_config

    if engine != "torch":
        raise unknown_name("engine to profile", engine, ["torch"])
    if device not in ("auto", "cpu", "cuda"):
        raise unknown_name("device", device, ["auto", "cpu", "cuda"])
    check_writable(out, "--out")
    grid = profiler.QUICK if quick else profiler.Grid()
    if served is not None:
        measured, name, where = _served_measure(served, address, replica, grid, json_out)
        name = gpu or name
    else:
        cfg = load_model_config(model_config)
        dev = pick_device(device)
        name, where = gpu or ("CUDA" if dev == "cuda" else "CPU"), None
        if not json_out:
            _say(f"profiling the real engine ({REAL_NOTE}): model {cfg.name} on {dev} ...")
        measured = profiler.measure(cfg, device=dev, threads=threads, kv_tokens=kv_tokens, max_batch=max_batch,
                                    max_batched_tokens=max_batched_tokens, grid=grid)
    coef = profiler.fit(measured["points"])
    book = profiler.profile_book(measured, coef, gpu=name)
    profiler.write_profile(out, book, measured, coef)
    entry, model = book["measured"][-1], measured["model"]["name"]
    if json_out:
        emit_json({"out": out, "engine": "torch", "note": REAL_NOTE, "device": measured["device"], "gpu": name,
                   "model": model, "served": where, "entry": entry, "points": measured["points"],
                   "fit_error": {"mean": coef["mean_abs_rel_error"], "max": coef["max_abs_rel_error"]}})
        return
    f = entry["fit"]
    print_table(f"measured iteration time ({REAL_NOTE}; {len(measured['points'])} points)", ["term", "value"],
                [("overhead per iteration", f"{f['overhead_ms']:.3f} ms"),
                 ("per token in the iteration", f"{f['per_token_ms'] * 1e3:.2f} us"),
                 ("per key token read", f"{f['per_kv_token_ms'] * 1e3:.3f} us"),
                 ("knee: keys per iteration past which each costs more", str(f.get("kv_knee", "none"))),
                 ("per key token past the knee (extra)", f"{f.get('per_kv_over_knee_ms', 0.0) * 1e3:.3f} us"),
                 ("per prompt token squared", f"{f['per_prompt_sq_ms'] * 1e6:.3f} ns"),
                 ("per query x key token (whole batch)", f"{f['per_q_kv_ns']:.1f} ns"),
                 *([("iterations timed as served (burst and trickle)", str(coef["served_steps"]))] if where else
                   [("iterations timed in the mixed burst", str(coef["burst_steps"])),
                    ("iterations timed in the trickle", str(coef["trickle_steps"]))]),
                 ("fit |rel. error| mean / max", f"{coef['mean_abs_rel_error']:.1%} / {coef['max_abs_rel_error']:.1%}")])
    _say(f"wrote {out} (gpu '{name}', model '{model}'): point a fleet file at it with `profiles: {out}`")


def _served_measure(base: str, address: str, replicas: list[str] | None, grid, quiet: bool) -> tuple[dict, str, dict]:
    """``profile --served``: the running router's real-engine replicas time the profiler's burst and trickle
    as served; (the points with the replicas' engine settings, their GPU type, where they were measured)."""
    from mixfleet.errors import InputError
    from mixfleet.routing.serve.replay import served_engines, served_profile_points
    from mixfleet.routing.torch_model import REAL_NOTE

    base = base.rstrip("/").removesuffix("/v1")
    if not base.startswith(("http://", "https://")):
        raise InputError(f"--served '{base}' is not an HTTP URL", "pass the router's base URL: http://127.0.0.1:PORT")
    model, real = served_engines(base, replicas, address=address)
    ids = [i["replica_id"] for i in real]
    settings = real[0]["settings"]
    if not quiet:
        _say(f"profiling the real engine as served ({REAL_NOTE}): replicas {', '.join(ids)} at {base} ...")
    points = served_profile_points(base, model, ids, settings["max_batched_tokens"],
                                   settings["model"]["max_context"], timeout_s=600.0, grid=grid)
    if not points:
        raise InputError("the real engine offers no iteration hook in this transformers version",
                         "profile offline instead (without --served)")
    return {**settings, "points": points}, real[0]["gpu"], {"url": base, "replicas": ids}


def _register_serve() -> None:
    """``mixfleet routing serve`` lives in the live router's subpackage; add it when present."""
    if importlib.util.find_spec("mixfleet.routing.serve") is None:
        return
    if importlib.util.find_spec("mixfleet.routing.serve.cli") is None:
        return
    module = importlib.import_module("mixfleet.routing.serve.cli")
    register = getattr(module, "register", None)
    if register is not None:
        register(app)


_register_serve()
