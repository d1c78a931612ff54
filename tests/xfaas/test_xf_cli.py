"""``mixfleet xfaas run|plan`` as a user runs them; bad input fails with one line and runs nothing."""

from __future__ import annotations

import json

import pytest

SG = "examples/xfaas/smart_grid"


@pytest.fixture
def on_session_ray(ray_local) -> dict:
    """The environment that makes a CLI run join the session's Ray (as under `ray job submit`): no second Ray start."""
    return {"RAY_ADDRESS": ray_local.address}


def test_run_json_reports_output_latency_cost_and_placement(cli, on_session_ray):
    r = cli("xfaas", "run", f"{SG}/workflow.yaml", "--input", f"{SG}/input.json", "--placement", "azure", "--json",
            env=on_session_ray)
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert set(out) >= {"output", "latency_s", "cost_usd", "placement", "nodes"}
    assert out["output"]["steps"] == 11 and out["output"]["anomalies"] == [4]
    assert set(out["placement"].values()) == {"azure"} and len(out["nodes"]) == 17
    assert out["latency_s"] > 20 and "emulated" in out["emulation"]  # 10 Azure hops of ~2.5 s (emulated)


def test_plan_accepts_an_xfaas_dag_json_as_is(cli, data_dir):
    r = cli("xfaas", "plan", data_dir / "xfaas/smart-grid/dag-description.json", "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert len(out["placement"]) == 17
    assert set(out["placement"].values()) == {"azure"}  # XFaaS pinned every node (CSP Azure)
    assert out["predicted_latency_s"] > 0 and out["solve_time_s"] >= 0


def test_plan_places_an_unpinned_dag(cli, data_dir):
    r = cli("xfaas", "plan", data_dir / "xfaas/graph-dag.json", "--json", "--placement", "ilp")
    assert r.returncode == 0, r.stderr
    assert set(r.json()["placement"]) == {"TaskA", "TaskB", "TaskC", "TaskD", "TaskE", "CollectLogsGraphAws"}


T = "funcs.py:touch"


@pytest.mark.parametrize("body, needle", [
    (f"nodes: [{{name: a, function: '{T}'}}, {{name: b, function: '{T}'}}]\n"
     "edges: [{from: a, to: b}, {from: b, to: a}]", "cycle in"),
    (f"nodes: [{{name: a, function: '{T}'}}]\nedges: [{{from: a, to: b}}]", "dangling edge #1 a -> b"),
    (f"nodes: [{{name: a, function: 'funcs.py:nope'}}, {{name: b, function: '{T}'}}]", "node 'a': unknown function 'nope'"),
    (f"nodes: [{{name: a, function: '{T}', pin: {{cloud: oracle}}}}, {{name: b, function: '{T}'}}]",
     "pinned to unknown cloud 'oracle'"),
])
def test_run_bad_workflow_fails_before_running(cli, tmp_path, repo_root, body, needle):
    (tmp_path / "funcs.py").write_text((repo_root / "tests/data/xfaas/funcs.py").read_text())
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: bad\n" + body + "\n")
    marker = tmp_path / "ran"
    r = cli("xfaas", "run", wf, "--input", json.dumps({"marker": str(marker)}), "--json")
    assert r.returncode != 0 and r.stdout == ""
    assert needle in r.error_line
    assert not marker.exists()  # nothing ran


def test_a_good_workflow_leaves_the_marker(cli, tmp_path, repo_root, on_session_ray):
    (tmp_path / "funcs.py").write_text((repo_root / "tests/data/xfaas/funcs.py").read_text())
    wf = tmp_path / "wf.yaml"
    wf.write_text(f"name: good\nnodes: [{{name: a, function: '{T}'}}]\n")
    marker = tmp_path / "ran"
    r = cli("xfaas", "run", wf, "--input", json.dumps({"marker": str(marker)}), "--placement", "aws", "--json",
            env=on_session_ray)
    assert r.returncode == 0, r.stderr
    assert marker.exists() and r.json()["placement"] == {"a": "aws"}


def test_bad_cli_values(cli, tmp_path):
    bad = tmp_path / "dag.json"
    bad.write_text(json.dumps({"WorkflowName": "w", "Nodes": [{"NodeName": "A", "CSP": "IBM"}], "Edges": []}))
    r = cli("xfaas", "plan", bad)
    assert r.returncode != 0 and "unknown CSP 'IBM'" in r.error_line
    r = cli("xfaas", "plan", f"{SG}/workflow.yaml", "--placement", "azur")
    assert r.returncode != 0 and "unknown placement 'azur' (did you mean 'azure'?)" in r.error_line
    r = cli("xfaas", "run", f"{SG}/workflow.yaml", "--input", "{not json")
    assert r.returncode != 0 and "neither valid JSON nor an existing file" in r.error_line
