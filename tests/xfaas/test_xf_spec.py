"""Workflow specs, the XFaaS importer and the clouds file: validation without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.xfaas import load_clouds, load_workflow
from mixfleet.xfaas.functions import resolve_all

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples" / "xfaas").glob("*/workflow.yaml"))


def write(tmp_path, text: str, name="wf.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    (tmp_path / "funcs.py").write_text((REPO / "tests/data/xfaas/funcs.py").read_text())
    return p


def test_every_example_is_valid_and_its_functions_resolve():
    names = {p.parent.name for p in EXAMPLES}
    assert names == {"smart_grid", "graph", "math", "text", "image", "quantum"}
    clouds = load_clouds()
    for path in EXAMPLES:
        wf = load_workflow(path)
        wf.check_clouds(clouds)
        fns = resolve_all(wf)
        assert set(wf.nodes) <= set(fns)
        assert json.loads((path.parent / "input.json").read_text()) is not None


def test_smart_grid_example_matches_the_xfaas_dag(data_dir):
    ours = load_workflow(REPO / "examples/xfaas/smart_grid/workflow.yaml")
    theirs = load_workflow(data_dir / "xfaas/smart-grid/dag-description.json")
    assert len(ours.nodes) == len(theirs.nodes) == 17
    assert {(u, v) for u, v, _ in ours.edges} == {(u, v) for u, v, _ in theirs.edges}
    # dag-benchmark.json next to the XFaaS file feeds the per-cloud exec times and payload sizes
    assert theirs.nodes["TaskB"].exec_ms == {"aws": 4139.0, "azure": 514.0} == ours.nodes["TaskB"].exec_ms
    assert theirs.nodes["TaskA"].output_kb == 25.0
    assert theirs.nodes["TaskA"].pin.cloud == "azure"  # XFaaS's CSP field becomes a pin


def test_xfaas_dag_json_imports_as_is(data_dir):
    wf = load_workflow(data_dir / "xfaas/graph-dag.json")
    assert wf.sources == ["TaskA"] and wf.sinks == ["CollectLogsGraphAws"]
    assert wf.preds["TaskE"] == ["TaskB", "TaskC", "TaskD"]
    assert all(n.pin is None for n in wf.nodes.values())  # CSP "NA"
    q = load_workflow(data_dir / "xfaas/qxfaas-parallel-simulator2-dag.json")
    assert q.preds["Reconstructor"] == ["Simulator0", "Simulator1"]


def test_fan_in_order_follows_the_spec_not_names(tmp_path):
    p = write(tmp_path, """
name: t
nodes:
  - {name: s, function: funcs.py:inc}
  - {name: zeta, function: funcs.py:tag_a}
  - {name: alpha, function: funcs.py:tag_b}
  - {name: j, function: funcs.py:gather}
edges:
  - {from: s, to: [zeta, alpha]}
  - {from: zeta, to: j}
  - {from: alpha, to: j}
""")
    assert load_workflow(p).preds["j"] == ["zeta", "alpha"]


@pytest.mark.parametrize("body, needle", [
    ("nodes: [{name: a, function: funcs.py:inc}, {name: b, function: funcs.py:inc}]\n"
     "edges: [{from: a, to: b}, {from: b, to: a}]", "cycle in"),
    ("nodes: [{name: a, function: funcs.py:inc}]\nedges: [{from: a, to: nowhere}]", "dangling edge #1 a -> nowhere"),
    ("nodes: [{name: a, function: funcs.py:inc, pin: {cloud: awz}}]", "pinned to unknown cloud 'awz'"),
    ("nodes: [{name: a, function: funcs.py:inc, memroy_mb: 3}]", "unknown key 'nodes.0.memroy_mb'"),
    ("nodes: [{name: a, function: funcs.py:inc}, {name: a, function: funcs.py:inc}]", "duplicate node 'a'"),
])
def test_bad_specs_name_the_culprit(tmp_path, body, needle):
    p = write(tmp_path, "name: bad\n" + body + "\n")
    with pytest.raises(ConfigError) as err:
        wf = load_workflow(p)
        wf.check_clouds(load_clouds())
    assert needle in str(err.value)


def test_cycle_error_names_the_cycle(tmp_path):
    p = write(tmp_path, """
name: c
nodes: [{name: a, function: funcs.py:inc}, {name: b, function: funcs.py:inc}, {name: c, function: funcs.py:inc}]
edges: [{from: a, to: b}, {from: b, to: c}, {from: c, to: b}]
""")
    with pytest.raises(ConfigError, match=r"cycle in .*: b -> c -> b"):
        load_workflow(p)


def test_unknown_function_lists_the_valid_ones(tmp_path):
    p = write(tmp_path, "name: f\nnodes: [{name: a, function: 'funcs.py:incc'}]\n")
    with pytest.raises(ConfigError) as err:
        resolve_all(load_workflow(p))
    msg = str(err.value)
    assert "node 'a': unknown function 'incc'" in msg and "did you mean 'inc'" in msg and "gather" in msg


@pytest.mark.parametrize("doc, needle", [
    ({"WorkflowName": "w", "Nodes": []}, "missing key 'Edges'"),
    ({"WorkflowName": "w", "Nodes": [{"NodeId": "1"}], "Edges": []}, "node #1 has no 'NodeName'"),
    ({"WorkflowName": "w", "Nodes": [{"NodeName": "A", "CSP": "Oracle"}], "Edges": []}, "unknown CSP 'Oracle'"),
    ({"WorkflowName": "w", "Nodes": [{"NodeName": "A"}], "Edges": [{"A": "B"}]}, "must map to a list"),
    ({"WorkflowName": "w", "Nodes": [{"NodeName": "A"}], "Edges": [{"A": ["B"]}]}, "dangling edge"),
])
def test_malformed_xfaas_json_is_rejected(tmp_path, doc, needle):
    p = tmp_path / "dag.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_workflow(p)
    assert needle in str(err.value)


def test_clouds_file_defaults_and_hop_model():
    clouds = load_clouds()
    assert set(clouds.names) == {"aws", "azure", "gcp", "qpu"}
    assert clouds.general() == ["aws", "azure", "gcp"]
    # the XFaaS-measured 25 KB hop latencies are reproduced by a + b*KB
    assert clouds.hop_s("azure", "azure", 25) == pytest.approx(2.458, abs=1e-3)
    assert clouds.hop_s("aws", "azure", 25) == pytest.approx(1.558, abs=1e-3)
    # past the smallest payload limit on the hop (azure 64 KB) a claim check adds its round trip and price
    assert clouds.hop_s("aws", "azure", 100) - clouds.hop_s("aws", "azure", 60) > 0.029
    assert clouds.hop_usd("aws", "azure", 100) > clouds.hop_usd("aws", "azure", 60) + 5e-6
    with pytest.raises(MixfleetError, match="unknown cloud 'azur'.*did you mean 'azure'"):
        clouds.get("azur")


def test_a_bad_clouds_file_is_rejected(tmp_path):
    src = (REPO / "mixfleet/xfaas/clouds.yaml").read_text().replace("cold_start_s: 0.25", "cold_start_s: 0.25\n    spead: 2")
    p = tmp_path / "clouds.yaml"
    p.write_text(src)
    with pytest.raises(ConfigError, match="unknown key 'clouds.aws.spead' in"):
        load_clouds(p)


def test_a_json_workflow_spec_loads_like_yaml(tmp_path):
    p = tmp_path / "wf.json"
    p.write_text(json.dumps({"name": "j", "nodes": [{"name": "a", "function": "mixfleet.xfaas.functions:noop"},
                                                    {"name": "b", "function": "mixfleet.xfaas.functions:noop"}],
                             "edges": [{"from": "a", "to": "b"}]}))
    wf = load_workflow(p)
    assert wf.order == ["a", "b"] and wf.sinks == ["b"]
