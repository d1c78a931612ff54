"""The platform team's path, end to end on the rehearsal cluster (GPUs and engines EMULATED).

`mixfleet cluster up examples/cluster/local.yaml` starts a Ray head with Ray's
own autoscaler on the fake multi-node provider; work is then submitted with
Ray's own CLIs (`ray job submit`, `serve deploy`), and the autoscaler must
launch exactly the GPU node types the Serve replicas ask for and remove them
once idle. The cluster has its own ports, temp dir, session and token, so it
never touches the suite's shared Ray; whatever happens, it is stopped at the end.

The whole rehearsal takes minutes, so it runs on request only:

    MIXFLEET_REHEARSAL=1 timeout 600 python -m pytest -q -s tests/platform/test_cluster_rehearsal.py -k down
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.multinode

LOCAL = "examples/cluster/local.yaml"
WC = "examples/mapreduce/wordcount.py:WordCount"
RAY_BIN = Path(sys.executable).parent
DEADLINE_S = 240  # generous: each wait polls for a state, never for a duration


def _bad_file(tmp_path, repo_root, mutate) -> Path:
    config = yaml.safe_load((repo_root / LOCAL).read_text())
    mutate(config)
    d = tmp_path / "examples" / "cluster"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo_root / "cluster.yaml", tmp_path / "cluster.yaml")
    p = d / "local.yaml"
    p.write_text(yaml.safe_dump(config))
    return p


def _deployments(c):
    return c["metadata"]["mixfleet"]["deployments"]


@pytest.mark.parametrize("mutate, path, suggestion", [
    (lambda c: _deployments(c)["routing-t4"].update(node_type="gpu_t5"),
     "metadata.mixfleet.deployments.routing-t4.node_type", "did you mean 'gpu_t4'"),
    (lambda c: _deployments(c)["routing-t4"]["ray_actor_options"].update(num_gpus=2),
     "metadata.mixfleet.deployments.routing-t4.ray_actor_options.num_gpus", "no node type can hold it"),
    (lambda c: _deployments(c)["routing-t4"]["ray_actor_options"].update(accelerator_type="A100"),
     "metadata.mixfleet.deployments.routing-t4.ray_actor_options.accelerator_type", "use node type 'gpu_a100'"),
    (lambda c: c["available_node_types"]["gpu_t4"]["resources"].update(GPU=2),
     "available_node_types.gpu_t4.resources.GPU", "set it to 1"),
    (lambda c: (c["available_node_types"].update(gpu_h100=c["available_node_types"].pop("gpu_v100")),
                _deployments(c).pop("routing-v100")),
     "missing from 'available_node_types'", "node type 'gpu_v100'"),
    (lambda c: c.pop("worker_setup_commands"), "worker_setup_commands", "add 'worker_setup_commands'"),
])
def test_bad_rehearsal_file_fails_validate_and_up_before_anything_starts(cli, tmp_path, repo_root, mutate, path,
                                                                          suggestion):
    bad = _bad_file(tmp_path, repo_root, mutate)
    state = tmp_path / "state"
    for verb in ("validate", "up"):
        r = cli("cluster", verb, bad, env={"MIXFLEET_CLUSTER_DIR": str(state)}, timeout=120)
        assert r.returncode != 0, r.stdout
        assert path in r.error_line and suggestion in r.error_line, r.stderr
        assert "Traceback" not in r.stderr
    assert not state.exists()  # nothing started


def test_rehearsal_file_declares_cluster_yaml_node_types(cli, repo_root):
    r = cli("cluster", "validate", LOCAL, "--json")
    assert r.returncode == 0, r.stderr
    local = r.json()
    real = cli("cluster", "validate", "cluster.yaml", "--json").json()
    assert local["provider"] == "fake_multinode" and local["rehearses"] == "../../cluster.yaml"
    assert local["node_types"].keys() == real["node_types"].keys()
    for name, t in real["node_types"].items():
        mine = local["node_types"][name]
        assert (mine["accelerator_type"], mine["gpus"]) == (t["accelerator_type"], t["gpus"])
        assert 0 < mine["cpus"] <= t["cpus"] or t["cpus"] == 0
        if not t["head"]:
            assert mine["min_workers"] == 0 and mine["max_workers"] >= 1


def test_up_picks_the_ray_command_from_the_provider(cli, tmp_path):
    r = cli("cluster", "up", LOCAL, "--dry-run")
    assert r.returncode == 0 and r.stdout.startswith("RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=")
    r = cli("cluster", "up", "cluster.yaml", "--dry-run")
    assert r.returncode == 0 and r.stdout.strip() == "ray up cluster.yaml"
    r = cli("cluster", "down", LOCAL, "--json", env={"MIXFLEET_CLUSTER_DIR": str(tmp_path / "none")})
    assert r.returncode == 0 and r.json() == {"cluster_name": "mixfleet-local", "stopped": False, "processes": 0}


def _ray(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Ray's own CLIs (`ray ...`, `serve ...`), with the rehearsal cluster's token in their environment."""
    full = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")} | env
    return subprocess.run([str(RAY_BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env=full)


def _wait_for(what: str, probe, deadline_s: float = DEADLINE_S, every_s: float = 2.0):
    """Poll ``probe`` until it returns ``(True, value)``; fail with the last value after the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = probe()
        if last and last[0]:
            return last[1]
        time.sleep(every_s)
    pytest.fail(f"timed out waiting for {what}; last seen: {last}")


def _status(cli, env) -> dict:
    r = cli("cluster", "status", "--json", env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.json()
    assert out["autoscaler"] is not None
    return out


def _expect_words(path: Path) -> dict[str, int]:
    return dict(Counter(re.findall(r"[A-Za-z]+", path.read_text())))


def _read_parts(out: Path) -> dict[str, int]:
    got = {}
    for part in sorted(out.glob("part-r-*")):
        for line in part.read_text().splitlines():
            k, v = line.split("\t")
            got[k] = int(v)
    return got


def _serve_config(src: Path, dst: Path, http: int, grpc: int) -> Path:
    """A committed Serve config with this test's ports (Serve keeps the ports it started with)."""
    config = yaml.safe_load(src.read_text())
    config["http_options"]["port"] = http
    config.setdefault("grpc_options", {})["port"] = grpc
    dst.write_text(yaml.safe_dump(config))
    return dst


def _app_running(dashboard: str, headers: dict, app: str, url: str, body: dict):
    """``app`` is RUNNING (every replica up) and ``url`` answers ``body`` with 200."""
    import httpx

    try:
        apps = httpx.get(f"{dashboard}/api/serve/applications/", headers=headers, timeout=30).json()
        status = ((apps.get("applications") or {}).get(app) or {}).get("status")
        if status != "RUNNING":
            return False, status
        r = httpx.post(url, json=body, timeout=60)
    except httpx.HTTPError as exc:
        return False, repr(exc)
    return r.status_code == 200, r


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MIXFLEET_REHEARSAL") != "1",
                    reason="the whole rehearsal (about 2-3 min on 2 cores) runs with MIXFLEET_REHEARSAL=1")
def test_up_job_submit_serve_deploy_autoscale_and_down(cli, repo_root, data_dir, monkeypatch):
    import httpx
    import numpy as np

    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.launcher import cluster_processes, read_state, stop_processes

    state_dir = tempfile.mkdtemp(prefix="mfr-", dir="/tmp")  # short: Ray's socket paths are limited
    env = {"MIXFLEET_CLUSTER_DIR": state_dir}
    monkeypatch.setenv("MIXFLEET_CLUSTER_DIR", state_dir)  # for read_state here
    tmp = Path(state_dir) / "work"
    tmp.mkdir()
    state = None
    took: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        took[name] = round(time.monotonic() - t0, 1)

    try:
        r = cli("cluster", "up", LOCAL, "--json", env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        up = r.json()
        assert up["emulated"] is True
        state = read_state("mixfleet-local")
        dashboard, ray_env = up["dashboard"], {**env, **up["env"]}
        token = Path(ray_env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        lap("up")

        # Ray's token authentication is on: the dashboard refuses a request without the cluster's token
        assert httpx.get(f"{dashboard}/api/jobs/", timeout=30).status_code in (401, 403)

        # 1. a MapReduce word count through Ray's own job submission; it runs while the router deploys
        book = data_dir / "gutenberg" / "pg-metamorphosis.txt"
        out = tmp / "wc"
        runtime_env = json.dumps({"excludes": [".git", ".venv", "**/__pycache__", "benchmarks/results"]})
        job: dict[str, subprocess.CompletedProcess] = {}
        submit = threading.Thread(target=lambda: job.setdefault("r", _ray(
            "ray", "job", "submit", "--address", dashboard, "--submission-id", "wordcount-1",
            "--working-dir", str(repo_root), "--runtime-env-json", runtime_env, "--",
            "mixfleet", "mapreduce", "run", WC, "--input", str(book), "--output", str(out), "--json",
            env=ray_env)), daemon=True)
        submit.start()

        # 2. the live router through `serve deploy`: its replicas ask for A100 and T4 nodes
        http, grpc = free_port(), free_port()
        routing = _serve_config(repo_root / "examples/cluster/serve-routing.yaml", tmp / "routing.yaml", http, grpc)
        dep = _ray("serve", "deploy", "--address", dashboard, str(routing), env=ray_env)
        assert dep.returncode == 0, dep.stderr[-3000:]

        def gpu_nodes_up():
            types = _status(cli, env)["autoscaler"]["node_types"]
            return types["gpu_a100"]["running"] >= 1 and types["gpu_t4"]["running"] >= 1, types
        types = _wait_for("the autoscaler to launch gpu_a100 and gpu_t4 nodes", gpu_nodes_up)
        lap("gpu nodes up")
        # exactly the types the replicas ask for: no V100 node
        assert all(types["gpu_v100"][k] == 0 for k in ("launching", "pending", "running"))
        status = _status(cli, env)
        assert {"A100", "T4"} <= set(status["by_accelerator"]) and "V100" not in status["by_accelerator"]
        assert {r["node_type"] for r in status["nodes"] if r["emulated_gpus"]} == {"gpu_a100", "gpu_t4"}

        completions = f"http://127.0.0.1:{http}/v1/completions"
        _wait_for("the router to be running and answer", lambda: _app_running(
            dashboard, auth, "mixfleet-llm", completions, {"model": "llama-3.2-3b", "prompt": [11, 12], "max_tokens": 2}))
        seen = set()
        for i in range(6):
            r = httpx.post(completions, timeout=60,
                           json={"model": "llama-3.2-3b", "prompt": [11] * (20 + i), "max_tokens": 4})
            assert r.status_code == 200, r.text
            seen.add(r.headers["x-mixfleet-accelerator"])
        assert {"A100-80GB", "T4"} <= seen
        lap("router answers")

        # the word count: Ray's job API says SUCCEEDED and the output equals the reference
        submit.join(timeout=DEADLINE_S)
        assert "r" in job, "ray job submit did not return"
        assert job["r"].returncode == 0, (job["r"].stdout + job["r"].stderr)[-3000:]
        status = _ray("ray", "job", "status", "--address", dashboard, "wordcount-1", env=ray_env)
        assert "Job 'wordcount-1' succeeded" in status.stdout + status.stderr
        assert httpx.get(f"{dashboard}/api/jobs/wordcount-1", headers=auth, timeout=30).json()["status"] == "SUCCEEDED"
        logs = _ray("ray", "job", "logs", "--address", dashboard, "wordcount-1", env=ray_env)
        assert '"status": "succeeded"' in logs.stdout
        assert _read_parts(out) == _expect_words(book)
        lap("job checked")

        # 3. the early-exit Serve config through `serve deploy`. Serve configs are declarative: the
        #    router's app is not in this one, so Serve deletes it and its GPU nodes go idle
        ee = _serve_config(repo_root / "examples/earlyexit/serve_config.yaml", tmp / "earlyexit.yaml", http, grpc)
        dep = _ray("serve", "deploy", "--address", dashboard, str(ee), env=ray_env)
        assert dep.returncode == 0, dep.stderr[-3000:]
        from mixfleet.earlyexit.data import load_dataset

        test = load_dataset("mnist", seed=0).test
        x, y = test.x[:16, 0], test.y[:16]
        predict = f"http://127.0.0.1:{http}/v1/models/mnist:predict"
        r = _wait_for("the early-exit server to be running and answer", lambda: _app_running(
            dashboard, auth, "earlyexit", predict, {"instances": x.tolist()}))
        preds = r.json()["predictions"]
        assert np.mean([p["label"] == t for p, t in zip(preds, y, strict=True)]) >= 0.75
        assert {"label", "confidence", "exit", "exit_name"} <= set(preds[0])
        lap("early-exit answers")

        def gpu_nodes_gone():
            types = _status(cli, env)["autoscaler"]["node_types"]
            return all(types[t]["running"] + types[t]["pending"] == 0 for t in ("gpu_a100", "gpu_t4")), types
        _wait_for("idle GPU nodes to be removed", gpu_nodes_gone)
        lap("gpu nodes gone")
        # the early-exit app (CPU only) is still answering on the head
        assert httpx.post(predict, json={"instances": x[:2].tolist()}, timeout=60).status_code == 200

        # 4. down: nothing of this cluster is left running
        r = cli("cluster", "down", LOCAL, "--json", env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.json()["stopped"] is True
        assert cluster_processes(state) == []
        assert read_state("mixfleet-local") is None
        lap("down")
        print(f"\nrehearsal timeline (s since start): {took}")
    finally:
        if read_state("mixfleet-local") is not None:
            cli("cluster", "down", LOCAL, env=env, timeout=120)
        if state is not None:
            stop_processes(state)
        shutil.rmtree(state_dir, ignore_errors=True)
