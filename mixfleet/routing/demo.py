"""Demo step: compare the routing policies on a slice of the Azure conv trace.

Runs in the simulator (GPUs EMULATED from calibrated profiles) on the
example mixed A100/V100/T4 fleet, prints the table and, with ``mixfleet demo --out DIR``, keeps the plot as
``DIR/routing_compare.png``. Pure Python: it does not need the Ray cluster.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mixfleet.platform.output import print_table

SLICE = 4000
LOAD = 0.7


def example_fleet_path() -> Path:
    """The example fleet: ``examples/routing/fleet.yaml`` in a checkout, else the packaged copy."""
    repo = Path(__file__).resolve().parents[2] / "examples" / "routing" / "fleet.yaml"
    if repo.exists():
        return repo
    return Path(str(resources.files("mixfleet.routing").joinpath("fleet.example.yaml")))


def step(ctx) -> dict:
    from mixfleet.routing.compare import compare, plot
    from mixfleet.routing.fleet import load_fleet
    from mixfleet.routing.policies import POLICIES

    fleet = load_fleet(example_fleet_path())
    cmp = compare(fleet, "azure-conv", list(POLICIES), [LOAD], [0], limit=SLICE)
    plot_path = ctx.keep("routing_compare.png")  # under --out DIR, else in the demo's scratch folder
    plot(cmp, plot_path, title="demo: azure-conv slice")
    run = cmp.runs[0]
    if not ctx.json_mode:
        rows = [(name, v["p50_e2e_s"], v["p99_e2e_s"], v["p99_ttft_s"], v["p99_tpot_s"], v["slo_attainment"])
                for name, v in run["policies"].items()]
        o = run["oracle_floor"]
        rows.append(("oracle floor", o["p50_e2e_s"], o["p99_e2e_s"], o["p99_ttft_s"], None, None))
        print_table(f"routing: {SLICE} Azure conv requests at {LOAD:.0%} of {cmp.capacity_req_s:.1f} req/s, "
                    f"{fleet.describe()} (simulated; GPUs EMULATED)",
                    ["policy", "p50 e2e s", "p99 e2e s", "p99 ttft s", "p99 tpot s", "SLO"], rows)
        if ctx.out_dir is not None:
            ctx.say(f"plot: {plot_path}")
    return {"emulated": True, "capacity_req_s": cmp.capacity_req_s, "load": LOAD, "requests": SLICE,
            "policies": run["policies"], "oracle_floor": run["oracle_floor"],
            "plot": str(plot_path) if ctx.out_dir is not None else None}
