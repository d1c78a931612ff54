"""On the emulated multi-node cluster, functions run on their cloud's nodes (Ray nodes labelled cloud/region)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixfleet.xfaas import Profile, load_clouds, load_workflow, make_plan
from mixfleet.xfaas.executor import Executor

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.multinode
def test_units_run_on_their_clouds_nodes(ray_cluster, tmp_path):
    import ray

    from mixfleet.platform import EmulatedNode

    clouds = load_clouds()
    ids = {}
    for name in ("aws", "azure"):
        ray_cluster.add_node(EmulatedNode(f"cloud_{name}", cpus=1, resources={f"cloud:{name}": 1},
                                          labels={"cloud": name, "region": clouds.get(name).region}))
    for node in ray.nodes():
        if node["Alive"]:
            for name in ("aws", "azure"):
                if node["Resources"].get(f"cloud:{name}"):
                    ids[name] = node["NodeID"]
    assert set(ids) == {"aws", "azure"}
    (tmp_path / "funcs.py").write_text((REPO / "tests/data/xfaas/funcs.py").read_text())
    (tmp_path / "wf.yaml").write_text("""
name: where
nodes:
  - {name: a, function: funcs.py:where, pin: {cloud: aws}}
  - {name: b, function: funcs.py:where, pin: {cloud: azure}}
  - {name: c, function: funcs.py:where, pin: {cloud: aws}}
edges: [{from: a, to: b}, {from: b, to: c}]
""")
    wf = load_workflow(tmp_path / "wf.yaml")
    prof = Profile(wf, clouds)
    r = Executor(wf, clouds=clouds, profile=prof).run({"x": 0}, make_plan(wf, "ilp", profile=prof))
    ran_on = {row["node"]: row["ray_node_id"] for row in r.nodes}
    assert ran_on == {"a": ids["aws"], "b": ids["azure"], "c": ids["aws"]}
    assert r.output["node_id"] == ids["aws"]
