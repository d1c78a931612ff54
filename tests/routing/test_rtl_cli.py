"""``mixfleet routing serve``: bad input fails fast with one error line; a full start/serve/Ctrl-C cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from mixfleet.platform.bootstrap import free_port


@pytest.mark.parametrize("args, needle", [
    (["--fleet", "no/such/fleet.yaml"], "fleet file 'no/such/fleet.yaml' not found"),
    (["--fleet", "examples/routing/fleet.yaml", "--policy", "fastest"], "unknown policy 'fastest'"),
    (["--fleet", "examples/routing/fleet.yaml", "--port", "70000"], "--port 70000 is out of range"),
    (["--fleet", "examples/routing/fleet.yaml", "--port", "8123", "--grpc-port", "8123"], "both 8123"),
    (["--fleet", "examples/routing/fleet.yaml", "--emulate", "--address", "127.0.0.1:6379"], "--emulate"),
    (["--fleet", "examples/routing/fleet.yaml", "--gpus-per-replica", "-1"], "gpus_per_replica"),
])
def test_serve_bad_input_is_one_error_line(cli, args, needle):
    r = cli("routing", "serve", *args, timeout=120)
    assert r.returncode != 0 and needle in r.error_line, r.stderr[-2000:]


@pytest.mark.multinode
def test_serve_emulate_serves_and_stops_cleanly_on_ctrl_c(repo_root, tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("model: llama-3.2-3b\npools:\n  - gpu: A100-80GB\n    count: 1\n  - gpu: T4\n    count: 1\n")
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "mixfleet", "routing", "serve", "--fleet", str(fleet), "--emulate",
                             "--port", str(port), "--grpc-port", str(grpc_port), "--json"], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                break
            time.sleep(1)
        assert ok, "the server never became healthy"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                       json={"model": "llama-3.2-3b", "prompt": "hi", "max_tokens": 4})
        assert r.status_code == 200 and r.headers["x-mixfleet-accelerator"] in {"A100-80GB", "T4"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("serve did not stop within 90 s of Ctrl-C")
    assert proc.returncode == 0, err[-3000:]
    info = __import__("json").loads(out)
    assert info["emulated"] is True and info["http"] == f"http://127.0.0.1:{port}/v1"
    assert "EMULATED" in err
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=3)
