"""``mixfleet xfaas run|plan|bench``: cross-cloud workflows on Ray (clouds EMULATED)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mixfleet.errors import InputError
from mixfleet.platform.output import check_writable, console, emit_json, print_table

app = typer.Typer(help="Run, plan and benchmark cross-cloud serverless workflows (clouds emulated).",
                  no_args_is_help=True, add_completion=False)

CLOUDS_OPT = typer.Option(None, "--clouds", help="clouds YAML (default: the documented built-in one)")
ONLY_OPT = typer.Option(None, "--only-clouds", help="comma-separated subset of clouds to place on, e.g. aws,azure")


def _clouds(clouds_file: str | None, only: str | None):
    from mixfleet.xfaas.clouds import load_clouds

    clouds = load_clouds(clouds_file)
    if only:
        clouds = clouds.restrict([c.strip().lower() for c in only.split(",") if c.strip()])
    return clouds


def _input(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    p = Path(value)
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"--input file '{p}' is not valid JSON (line {exc.lineno}: {exc.msg})",
                             "fix the file") from None
    raise InputError(f"--input '{value[:60]}' is neither valid JSON nor an existing file",
                     "pass a JSON literal such as '{\"x\": 1}' or a path to a .json file")


def _setup(workflow: str, clouds_file, only):
    from mixfleet.xfaas.model import Profile
    from mixfleet.xfaas.spec import load_workflow

    wf = load_workflow(workflow)
    clouds = _clouds(clouds_file, only)
    wf.check_clouds(clouds)
    return wf, clouds, Profile(wf, clouds)


@app.command()
def run(
    workflow: str = typer.Argument(..., help="workflow YAML/JSON, or an XFaaS dag.json"),
    input: str = typer.Option(..., "--input", help="the input payload: a JSON literal or a .json file"),
    placement: str = typer.Option("ilp", help="a cloud name, ilp, ilp_fusion, xfaas_cut or adaptive"),
    emulation: str = typer.Option("virtual", help="virtual (modelled clock), sleep (inject delays) or off"),
    address: str | None = typer.Option(None, help="Ray address (default: an embedded local Ray)"),
    clouds_file: str | None = CLOUDS_OPT,
    only_clouds: str | None = ONLY_OPT,
    seed: int = typer.Option(0, help="seed for retry jitter and emulated noise"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Run WORKFLOW once; print its output, latency, cost and placement (clouds emulated)."""
    import numpy as np

    from mixfleet.platform.bootstrap import connect
    from mixfleet.xfaas.executor import Executor
    from mixfleet.xfaas.planner import make_plan

    payload = _input(input)
    wf, clouds, profile = _setup(workflow, clouds_file, only_clouds)
    plan = make_plan(wf, placement, profile=profile)
    from mixfleet.xfaas.world import load_world

    executor = Executor(wf, clouds=clouds, profile=profile, emulation=emulation, rng=np.random.default_rng(seed),
                        world=load_world(clouds=clouds, seed=seed))
    connect(address)
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console(), transient=json_out, disable=json_out) as progress:
        bar = progress.add_task(f"{wf.spec.name} [{placement}]", total=len(plan.groups))

        def on_event(unit: str, what: str) -> None:
            if what in ("done", "skipped"):
                progress.advance(bar)
            progress.update(bar, description=f"{wf.spec.name} [{placement}] {unit}: {what}")

        result = executor.run(payload, plan, on_event=on_event)
    out = result.to_json()
    for w in plan.warnings:
        console().print(f"[yellow]warning:[/] {w}")
    if json_out:
        emit_json(out)
        return
    print_table(f"{wf.spec.name}: placement {placement} (clouds emulated)",
                ["node", "cloud", "attempts", "cold", "exec s", "finish s", "out KB", "claim check"],
                [(r["node"], r["cloud"], r.get("attempts"), r.get("cold_start"), r.get("exec_s"), r.get("finish_s"),
                  r.get("out_kb"), r.get("claim_check")) for r in result.nodes])
    console().print(f"latency {result.latency_s:.3f} s (emulated), cost ${result.cost_usd:.6f}, "
                    f"wall {result.wall_s:.3f} s")
    print(json.dumps(out["output"], default=str))


@app.command()
def plan(
    workflow: str = typer.Argument(..., help="workflow YAML/JSON, or an XFaaS dag.json as-is"),
    placement: str = typer.Option("ilp_fusion", help="a cloud name, ilp, ilp_fusion, xfaas_cut or adaptive"),
    lam: float = typer.Option(0.0, "--lambda", help="seconds of latency one dollar is worth (objective T + lambda*cost)"),
    budget: float | None = typer.Option(None, help="cost budget per run in USD (minimise latency under it)"),
    rate: float | None = typer.Option(None, "--rate", help="runs/s the plan must carry within the clouds' "
                                      "published concurrency quotas (default: quotas ignored)"),
    clouds_file: str | None = CLOUDS_OPT,
    only_clouds: str | None = ONLY_OPT,
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Place every node of WORKFLOW; show the placement, fusion groups, predicted latency/cost, solve time."""
    from mixfleet.xfaas.planner import make_plan

    if budget is not None and budget <= 0:
        raise InputError(f"--budget {budget} is not positive", "pass a cost per run in USD, e.g. 0.001")
    if rate is not None and not rate > 0:
        raise InputError(f"--rate {rate} is not positive", "pass the runs per second you expect at peak, e.g. 8")
    wf, _clouds_, profile = _setup(workflow, clouds_file, only_clouds)
    profile.load_rps = rate
    p = make_plan(wf, placement, profile=profile, lam=lam, budget=budget)
    out = {"workflow": wf.spec.name, **p.to_json(), "emulated": True}
    for w in p.warnings:
        console().print(f"[yellow]warning:[/] {w}")
    if json_out:
        emit_json(out)
        return
    print_table(f"{wf.spec.name}: {p.strategy} plan (clouds emulated)", ["node", "cloud", "fusion group"],
                [(n, c, next(("+".join(g) for g in p.groups if n in g and len(g) > 1), "-"))
                 for n, c in p.placement.items()])
    load = f", fits {rate:g} runs/s" + (" (over a quota, see the warning)" if p.overload else "") if rate else ""
    console().print(f"predicted latency {p.predicted_latency_s:.3f} s, cost ${p.predicted_cost_usd:.6f}{load}, "
                    f"solve {p.solve_time_s * 1000:.1f} ms ({p.status})")


def _events(spec: str | None):
    """``CLOUD:START:END:FACTOR`` -> one world event (a cloud that degrades mid-run and recovers)."""
    from mixfleet.xfaas.world import Event

    if not spec:
        return []
    parts = spec.split(":")
    try:
        cloud, start, end, factor = parts[0].lower(), float(parts[1]), float(parts[2]), float(parts[3])
    except (IndexError, ValueError):
        raise InputError(f"--degrade '{spec}' is not CLOUD:START:END:FACTOR",
                         "e.g. --degrade gcp:75:165:3 (gcp 3x slower from 75 s to 165 s, emulated)") from None
    if not 0 <= start < end or factor <= 0:
        raise InputError(f"--degrade '{spec}': need 0 <= START < END and FACTOR > 0", "e.g. gcp:75:165:3")
    return [Event(cloud, start, end, factor)]


@app.command()
def bench(
    workflow: str = typer.Argument(..., help="smart_grid, math or text (packaged XFaaS DAGs), or a workflow file"),
    workload: str = typer.Option("static", "--workload", help="alibaba, sawtooth, step or static (XFaaS shapes)"),
    strategies: str = typer.Option(",".join(("aws", "azure", "gcp", "xfaas_cut", "ilp", "xfaas_fusion",
                                             "ilp_fusion", "adaptive")), help="comma-separated strategies"),
    time_scale: float = typer.Option(0.05, "--time-scale", help="real seconds per emulated second"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply every request rate"),
    runs: int | None = typer.Option(None, "--runs", help="serve only the first N requests of the shape"),
    duration: float = typer.Option(1.0, help="static/step rows: seconds multiplier (XFaaS --duration)"),
    max_rps: float = typer.Option(1.0, "--max-rps", help="static/step rows: rate multiplier (XFaaS --max-rps)"),
    degrade: str | None = typer.Option(None, help="CLOUD:START:END:FACTOR, a cloud slowing down mid-run"),
    benchmark: str | None = typer.Option(None, help="the planner's benchmark (`mixfleet xfaas profile` JSON)"),
    plot: str | None = typer.Option(None, "--plot", help="write a PNG of latency over time and prediction vs measurement"),
    address: str | None = typer.Option(None, help="Ray address (default: an embedded local Ray)"),
    clouds_file: str | None = CLOUDS_OPT,
    only_clouds: str | None = ONLY_OPT,
    seed: int = typer.Option(0, help="seed of the world"),
    plan_rate: float | None = typer.Option(None, "--plan-rate", help="runs/s the planners fit to the clouds' "
                                           "concurrency quotas, e.g. the shape's peak (default: quotas ignored)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Serve WORKFLOW under an XFaaS workload shape with every strategy side by side, in the EMULATED
    world (delays injected as scaled real time on Ray); measured figures next to the planner's prediction."""
    from mixfleet.platform.bootstrap import connect
    from mixfleet.xfaas.loadbench import bench_load, load_dag, plot_load
    from mixfleet.xfaas.workloads import SHAPES

    if workload not in SHAPES:
        raise InputError(f"--workload '{workload}' is not a known shape", f"valid: {', '.join(SHAPES)}")
    if not 0 < time_scale <= 10:
        raise InputError(f"--time-scale {time_scale} must be in (0, 10]", "e.g. 0.05 (300 emulated s in 15 s)")
    if rate_scale <= 0:
        raise InputError(f"--rate-scale {rate_scale} must be positive", "e.g. 0.5")
    if runs is not None and runs < 1:
        raise InputError(f"--runs {runs} must be at least 1", "pass --runs 50, or leave it out to serve the whole shape")
    if plan_rate is not None and plan_rate < 0:
        raise InputError(f"--plan-rate {plan_rate} is negative", "give runs per second, or 0 to ignore the quotas")
    events = _events(degrade)
    check_writable(plot, "--plot")
    wf = load_dag(workflow)
    clouds = _clouds(clouds_file, only_clouds)
    wf.check_clouds(clouds)
    names = [x.strip().lower() for x in strategies.split(",") if x.strip()]
    from mixfleet.xfaas.planner import strategy_names

    for n in names:
        if n not in strategy_names(clouds):
            raise InputError(f"--strategies: unknown strategy '{n}'", f"valid: {', '.join(strategy_names(clouds))}")
    for e in events:
        clouds.check(e.cloud)
    connect(address)
    res = bench_load(wf, clouds, workload, strategies=names, time_scale=time_scale, rate_scale=rate_scale,
                     duration=duration, max_rps=max_rps, events=events, benchmark=benchmark, seed=seed,
                     max_requests=runs, plan_rps=plan_rate)
    if plot:
        res["plot"] = str(plot_load([res], plot))
    if json_out:
        emit_json(res)
        return
    print_table(f"{wf.spec.name} under '{workload}': {res['requests']} requests (clouds EMULATED)",
                ["strategy", "p50 s", "p95 s", "cost USD/run", "predicted s", "pred. error", "cold/run", "plan changes"],
                [(k, v["p50_latency_s"], v["p95_latency_s"], v["cost_usd"], v["predicted_latency_s"],
                  f"{v['prediction_error_p50']:+.0%}", v["cold_starts_per_run"], v["plan_changes"])
                 for k, v in res["strategies"].items()])
    if plot:
        console().print(f"plot: {res['plot']}")


@app.command()
def profile(
    workflow: str = typer.Argument(..., help="smart_grid, math or text (packaged XFaaS DAGs), or a workflow file"),
    out: str | None = typer.Option(None, "--out", help="write the benchmark JSON here (the planner's input)"),
    runs: int = typer.Option(5, help="samples per function and cloud, and per cloud pair"),
    clouds_file: str | None = CLOUDS_OPT,
    only_clouds: str | None = ONLY_OPT,
    seed: int = typer.Option(1000, help="seed of the world sampled"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Benchmark every function on every cloud and every cloud pair in the EMULATED world (as XFaaS
    benchmarks before it plans); the planner reads the result via `bench --benchmark FILE`."""
    from mixfleet.platform.output import atomic_write_text, to_json
    from mixfleet.xfaas.loadbench import load_dag
    from mixfleet.xfaas.profiling import profile_world
    from mixfleet.xfaas.world import load_world

    if runs < 1:
        raise InputError(f"--runs {runs} must be at least 1", "pass --runs 5, for example")
    check_writable(out, "--out")
    wf = load_dag(workflow)
    clouds = _clouds(clouds_file, only_clouds)
    wf.check_clouds(clouds)
    bench = profile_world(wf, load_world(clouds=clouds, seed=seed), runs=runs)
    if out:
        atomic_write_text(out, to_json(bench, indent=2) + "\n")
    if json_out:
        emit_json(bench)
        return
    clouds_seen = sorted({c for v in bench["NodeBenchmarks"].values() for c in v})
    print_table(f"{wf.spec.name}: median exec ms per cloud ({runs} samples, EMULATED world)",
                ["node", *clouds_seen, "output KB"],
                [(n, *[v.get(c, {}).get("Latency", "-") for c in clouds_seen], bench["DataTransferSize"][n])
                 for n, v in bench["NodeBenchmarks"].items()])
    if out:
        console().print(f"benchmark: {out}")
