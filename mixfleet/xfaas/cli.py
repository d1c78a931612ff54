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
    executor = Executor(wf, clouds=clouds, profile=profile, emulation=emulation, rng=np.random.default_rng(seed))
    connect(address)
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console(), transient=json_out) as progress:
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
    clouds_file: str | None = CLOUDS_OPT,
    only_clouds: str | None = ONLY_OPT,
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Place every node of WORKFLOW; show the placement, fusion groups, predicted latency/cost, solve time."""
    from mixfleet.xfaas.planner import make_plan

    if budget is not None and budget <= 0:
        raise InputError(f"--budget {budget} is not positive", "pass a cost per run in USD, e.g. 0.001")
    wf, _clouds_, profile = _setup(workflow, clouds_file, only_clouds)
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
    console().print(f"predicted latency {p.predicted_latency_s:.3f} s, cost ${p.predicted_cost_usd:.6f}, "
                    f"solve {p.solve_time_s * 1000:.1f} ms ({p.status})")


@app.command()
def bench(
    workflow: str = typer.Argument(..., help="workflow YAML/JSON"),
    input: str = typer.Option("{}", "--input", help="the input payload: a JSON literal or a .json file"),
    runs: int = typer.Option(20, help="workflow runs per strategy"),
    plot: str = typer.Option("xfaas_bench.png", help="PNG of the latency-cost plane"),
    address: str | None = typer.Option(None, help="Ray address (default: an embedded local Ray)"),
    clouds_file: str | None = CLOUDS_OPT,
    only_clouds: str | None = ONLY_OPT,
    seed: int = typer.Option(0, help="seed for emulated noise"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Compare, in one run, single clouds, the XFaaS cut, ILP, ILP+fusion and adaptive (clouds emulated)."""
    from mixfleet.platform.bootstrap import connect
    from mixfleet.xfaas.bench import compare_strategies, plot_plane

    if runs < 1:
        raise InputError(f"--runs {runs} must be at least 1", "pass --runs 20, for example")
    check_writable(plot, "--plot")
    payload = _input(input)
    wf, clouds, profile = _setup(workflow, clouds_file, only_clouds)
    connect(address)
    res = compare_strategies(wf, clouds, payload, runs=runs, seed=seed)
    plot_plane(res, plot, title=f"{wf.spec.name}: latency vs cost per strategy (emulated clouds)")
    out = {"workflow": wf.spec.name, "runs": runs, "emulated": True, "plot": plot, **res}
    if json_out:
        emit_json(out)
        return
    print_table(f"{wf.spec.name}: {runs} runs per strategy (clouds emulated)",
                ["strategy", "p50 latency s", "p95 latency s", "cost USD"],
                [(k, v["p50_latency_s"], v["p95_latency_s"], v["cost_usd"]) for k, v in res["strategies"].items()])
    console().print(f"plot: {plot}")
