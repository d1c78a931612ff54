"""``mixfleet xfaas profile``: benchmark runs of a workflow against the EMULATED world.

As XFaaS benchmarks every function on every cloud before it plans, this samples each function
``runs`` times on each cloud (warm; the world's noise, stragglers and drift included) and each
cloud pair's hop at the function's payload, and writes the medians. The planner reads this file
(:meth:`mixfleet.xfaas.model.Profile.apply_benchmark`), never the world itself.

Format (JSON): ``{"workflow", "emulated": true, "runs", "seed",
"NodeBenchmarks": {node: {cloud: {"Latency": ms}}}, "DataTransferSize": {node: KB},
"EdgeBenchmarks": {"src->dst": {"kb": KB, "Latency": ms}}}``.
"""

from __future__ import annotations

import statistics


def profile_world(workflow, world, *, runs: int = 5, spacing_s: float = 7.0) -> dict:
    """Median exec time per (node, cloud), payload per node and hop latency per cloud pair."""
    clouds = [c for c in world.clouds.general() if c in world.config.clouds]
    wf = workflow.spec.name
    nodes, sizes = {}, {}
    t = 0.0
    for n in workflow.order:
        allowed = [c for c in workflow.allowed_clouds(n, world.clouds) if c in world.config.clouds]
        row = {}
        for c in allowed:
            xs = []
            for _ in range(runs):
                xs.append(world.exec_s(wf, n, c, t))
                t += spacing_s
            row[c] = {"Latency": round(statistics.median(xs) * 1000.0, 3)}
        nodes[n] = row
        sizes[n] = world.output_kb(wf, n, workflow.nodes[n].output_kb)
    kb = statistics.median(sizes.values()) if sizes else 1.0
    edges = {}
    for a in clouds:
        for b in clouds:
            xs = []
            for _ in range(runs):
                xs.append(world.hop_s(a, b, kb, t))
                t += spacing_s
            edges[f"{a}->{b}"] = {"kb": kb, "Latency": round(statistics.median(xs) * 1000.0, 3)}
    return {"workflow": wf, "emulated": True, "runs": runs, "seed": world.seed, "NodeBenchmarks": nodes,
            "DataTransferSize": sizes, "EdgeBenchmarks": edges}
