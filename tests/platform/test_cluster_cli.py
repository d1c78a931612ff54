"""The `mixfleet cluster` commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml


def test_repo_cluster_yaml_validates(cli):
    r = cli("cluster", "validate", "cluster.yaml", "--json")
    assert r.returncode == 0, r.stderr
    types = r.json()["node_types"]
    assert {t["accelerator_type"] for t in types.values()} >= {"A100", "V100", "T4"}


def _write_variant(tmp_path, repo_root, mutate):
    config = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    mutate(config)
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump(config))
    return p


def test_max_worker_typo_suggests_max_workers(cli, tmp_path, repo_root):
    def typo(c):
        t4 = c["available_node_types"]["gpu_t4"]
        t4["max_worker"] = t4.pop("max_workers")

    r = cli("cluster", "validate", _write_variant(tmp_path, repo_root, typo))
    assert r.returncode != 0
    assert "max_worker" in r.error_line and "did you mean 'max_workers'" in r.error_line


def test_unknown_accelerator_type_is_rejected(cli, tmp_path, repo_root):
    def bad(c):
        res = c["available_node_types"]["gpu_t4"]["resources"]
        res.pop("accelerator_type:T4")
        res["accelerator_type:T5"] = 1

    r = cli("cluster", "validate", _write_variant(tmp_path, repo_root, bad))
    assert r.returncode != 0 and "'T5'" in r.error_line and "T4" in r.error_line


def test_gpu_node_without_accelerator_type_is_rejected(cli, tmp_path, repo_root):
    r = cli("cluster", "validate",
            _write_variant(tmp_path, repo_root,
                           lambda c: c["available_node_types"]["gpu_t4"]["resources"].pop("accelerator_type:T4")))
    assert r.returncode != 0 and "no accelerator type" in r.error_line


def test_bad_input_gives_one_error_line(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: [unclosed\n")
    for args, needle in [
        (("cluster", "validate", tmp_path / "missing.yaml"), "does not exist"),
        (("cluster", "validate", bad), "malformed YAML"),
        (("cluster", "status", "--address", "127.0.0.1:9"), "cannot reach Ray"),
        (("cluster", "local", "--nodes", "gpu_h9=1"), "unknown node type 'gpu_h9'"),
        (("clustr",), "did you mean 'cluster'"),
    ]:
        r = cli(*args, timeout=60)
        assert r.returncode != 0, args
        assert needle in r.error_line, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_up_and_down_dry_run_print_the_ray_command(cli):
    r = cli("cluster", "up", "cluster.yaml", "--dry-run", "--yes")
    assert r.returncode == 0 and r.stdout.strip() == "ray up cluster.yaml -y"
    r = cli("cluster", "down", "--dry-run")
    assert r.returncode == 0 and r.stdout.strip() == "ray down cluster.yaml"


def test_nothing_shadows_the_standard_library(repo_root):
    proc = subprocess.run([sys.executable, "-c", "import uuid, platform; print(platform.system())"],
                          cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip()


@pytest.mark.slow
def test_cluster_local_then_status_lists_nodes_by_accelerator(repo_root, cli):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "mixfleet", "cluster", "local", "--json"], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        up = json.loads(line)
        assert up["emulated"] is True
        assert {n["accelerator_type"] for n in up["nodes"]} >= {"A100", "V100", "T4"}
        r = cli("cluster", "status", "--address", up["address"], "--json", timeout=60)
        assert r.returncode == 0, r.stderr
        groups = r.json()["by_accelerator"]
        assert set(groups) >= {"A100", "V100", "T4", "cpu"}
        assert all(len(groups[t]) == 1 for t in ("A100", "V100", "T4"))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    time.sleep(1)


def test_demo_json_has_a_key_per_step(cli):
    r = cli("demo", "--json", "--only", "cluster", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.json()
    assert out["cluster"]["by_accelerator"].keys() >= {"A100", "V100", "T4"}
