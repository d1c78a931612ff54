"""Demo step: bring up the emulated fleet from cluster.yaml and show it."""

from __future__ import annotations

from pathlib import Path

from mixfleet.platform.bootstrap import connect
from mixfleet.platform.local_cluster import EmulatedCluster, default_fleet_nodes, nodes_from_spec
from mixfleet.platform.status import by_accelerator, node_rows


def step(ctx) -> dict:
    if Path(ctx.cluster_file).exists():
        from mixfleet.platform.cluster_config import load_cluster_config

        spec = load_cluster_config(ctx.cluster_file)
        nodes = nodes_from_spec(spec, cpus_per_node=1)
        source = ctx.cluster_file
    else:
        nodes, source = default_fleet_nodes(), "built-in A100/V100/T4 fleet"
    cluster = EmulatedCluster(nodes, head_cpus=2).start()
    ctx.extras["cluster"] = cluster
    conn = connect(cluster.address)
    ctx.address = conn.address
    rows = node_rows()
    if not ctx.json_mode:
        from mixfleet.platform.cli import _print_nodes

        _print_nodes(rows, title=f"cluster: emulated fleet from {source} (GPUs emulated)")
    return {"address": conn.address, "source": source, "emulated": True,
            "nodes": len(rows), "by_accelerator": {k: len(v) for k, v in by_accelerator(rows).items()}}
