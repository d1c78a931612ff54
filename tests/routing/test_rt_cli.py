"""`mixfleet routing simulate | compare | plan` as a user runs them (subprocesses)."""

from __future__ import annotations

import pytest

FLEET = "examples/routing/fleet.yaml"


@pytest.fixture(scope="module")
def conv(data_dir):
    return str(data_dir / "traces" / "azure_conv_head300.csv")


def test_simulate_json(cli, conv):
    r = cli("routing", "simulate", "--trace", conv, "--fleet", FLEET, "--policy", "least_work_left", "--load",
            "0.6", "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert out["emulated"] is True and out["requests"] == 300 and out["policy"] == "least_work_left"
    assert out["offered_req_s"] == pytest.approx(0.6 * out["capacity_req_s"], rel=1e-6)
    assert out["p50_e2e_s"] <= out["p99_e2e_s"] <= out["p999_e2e_s"]
    assert out["oracle_floor"]["p99_e2e_s"] <= out["p99_e2e_s"]
    assert set(out["utilisation"]) == {"A100-80GB", "V100-32GB", "T4"}
    assert (out["policy_stats"]["cap_rule"], out["policy_stats"]["chunked_prefill"]) == ("app", True)
    assert "EMULATED" in r.stderr


def test_simulate_oracle_lengths_ablation_and_a_bad_cap_rule(cli, conv):
    r = cli("routing", "simulate", "--trace", conv, "--fleet", FLEET, "--policy", "kv_aware", "--oracle-lengths",
            "--prefill-first", "--json")
    assert r.returncode == 0, r.stderr
    stats = r.json()["policy_stats"]
    assert (stats["cap_rule"], stats["chunked_prefill"]) == ("oracle", False)
    r = cli("routing", "simulate", "--trace", conv, "--fleet", FLEET, "--cap-rule", "psychic")
    assert r.returncode != 0 and "unknown cap rule 'psychic'" in r.error_line


def test_compare_json_schema_and_plot(cli, conv, tmp_path):
    png = tmp_path / "cmp.png"
    r = cli("routing", "compare", "--trace", conv, "--fleet", FLEET, "--load", "0.5", "--load", "0.9", "--seeds",
            "2", "--policy", "pow2", "--policy", "least_work_left", "--policy", "ilp", "--plot", str(png), "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert set(out) == {"capacity_req_s", "runs", "model"} and out["capacity_req_s"] > 0
    assert out["model"] == {"cap_rule": "app", "chunked_prefill": True, "kv_reserve": "prompt"}  # honest by default
    assert [(run["load"], run["seed"]) for run in out["runs"]] == [(0.5, 0), (0.5, 1), (0.9, 0), (0.9, 1)]
    keys = {"p50_e2e_s", "p99_e2e_s", "p99_ttft_s", "p99_tpot_s", "slo_attainment", "throughput_tok_s", "cost_usd"}
    for run in out["runs"]:
        assert set(run) == {"load", "seed", "policies", "oracle_floor"}
        assert list(run["policies"]) == ["pow2", "least_work_left", "ilp"]
        assert all(set(v) == keys for v in run["policies"].values())
        assert all(v["p99_e2e_s"] >= run["oracle_floor"]["p99_e2e_s"] for v in run["policies"].values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_and_provision_json(cli, conv):
    r = cli("routing", "plan", "--fleet", FLEET, "--trace", conv, "--load", "0.7", "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert out["status"] == "optimal" and out["solve_time_s"] < 2
    for c in out["classes"]:
        assert sum(c["weights"].values()) == pytest.approx(1, abs=1e-3)
    assert set(out["utilisation"]) == {"A100-80GB", "V100-32GB", "T4"}
    r = cli("routing", "plan", "--fleet", FLEET, "--trace", conv, "--provision", "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert out["counts"] and out["cost_per_hour"] <= out["best_single_type_cost_per_hour"] + 1e-9


def _fleet(tmp_path, text):
    p = tmp_path / f"fleet{abs(hash(text))}.yaml"
    p.write_text(text)
    return str(p)


def test_bad_inputs_give_one_clear_error_line(cli, conv, tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,5\n"
                       "2023-11-16 18:15:47.00,-3,5\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    cases = [
        (["simulate", "--trace", conv, "--fleet", FLEET, "--policy", "pow3"],
         "unknown policy 'pow3' (did you mean 'pow2'?); valid policys: ilp, kv_aware, least_outstanding"),
        (["simulate", "--trace", str(bad_csv), "--fleet", FLEET], "bad row 3 in trace"),
        (["simulate", "--trace", str(empty), "--fleet", FLEET], "is empty"),
        (["simulate", "--trace", conv, "--fleet", _fleet(tmp_path, "model: llama-3.2-3b\npools: [{gpu: K80}]\n")],
         "unknown GPU type 'K80'"),
        (["simulate", "--trace", conv, "--fleet", _fleet(tmp_path, "model: llama-2-7b\npools: [{gpu: T4}]\n")],
         "model 'llama-2-7b' does not fit GPU 'T4'"),
        (["compare", "--trace", conv, "--fleet", FLEET, "--plot", "out.jpg"], "must end with .png"),
        (["simulate", "--trace", conv, "--fleet", FLEET, "--load", "-1"], "load -1.0 is out of range"),
        (["plan", "--trace", conv, "--fleet",
          _fleet(tmp_path, "model: llama-3.2-3b\npools: [{gpu: T4}, {gpu: A100-80GB}]\nslo: {e2e_s: 0.05}\n")],
         "infeasible SLO for class"),
    ]
    for args, expected in cases:
        r = cli("routing", *args)
        assert r.returncode != 0, args
        assert expected in r.error_line, (args, r.stderr[-500:])
    assert "fastest GPU (A100-80GB) takes" in r.error_line
