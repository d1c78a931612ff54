"""Quiet by default, loud on request: the steps a demo takes (start Ray, Serve up and down, Ray Data, the
early-exit batch inference) print nothing of Ray's unless MIXFLEET_LOG asks for it. Each run is a fresh process:
the quiet one starts its own Ray (and Serve), the loud one joins the session's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STEPS = r'''
import os

import httpx
import numpy as np
import ray
import ray.data
from ray import serve

from mixfleet.earlyexit.batch import batch_predict, images_dataset
from mixfleet.earlyexit.inputs import check_input
from mixfleet.platform.bootstrap import connect, shutdown
from mixfleet.platform.serving import serving


@serve.deployment
class Echo:
    async def __call__(self, request):
        return {"ok": True}


connect(num_cpus=2)
quick = bool(os.environ.get("QUICK"))  # Ray and Ray Data only
if not quick:
    with serving() as srv:
        srv.run(Echo.bind(), name="quiet-check", route_prefix="/quiet")
        assert httpx.get(srv.url("/quiet"), timeout=30).json() == {"ok": True}
# Ray Data after Serve has stopped: time for Ray to report on the driver anything the shutdown left behind
images = np.zeros((64, 1, 28, 28), np.float32)
for batch in ray.data.from_numpy(images).iter_batches(batch_size=32):
    check_input(batch["data"], (1, 28, 28))  # Ray Data hands out read-only arrays: no warning about them
if not quick:
    _, report = batch_predict(images_dataset(images), actors=1, batch_size=32)  # the demo's batch inference
    assert report.samples == 64
shutdown()
print("steps done")
'''


def _run(tmp_path, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "steps.py"
    script.write_text(STEPS)
    full = {k: v for k, v in os.environ.items() if k not in ("MIXFLEET_LOG", "RAY_ADDRESS")}
    full.update(PYTHONPATH=str(ROOT), RAY_DATA_DISABLE_PROGRESS_BARS="", **env)
    full = {k: v for k, v in full.items() if v != ""}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=full,
                          cwd=tmp_path)


def test_ray_serve_and_data_are_silent_by_default_and_loud_on_request(tmp_path, ray_local):
    quiet = _run(tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    shown = [line for line in quiet.stdout.splitlines() if line.strip()]
    assert shown == ["steps done"], "\n".join(shown[:20])  # nothing of Ray's, e.g. "(raylet) Task ... failed"
    noisy = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert noisy == [], "\n".join(noisy[:20])  # no INFO line, no warning, no traceback, no force-kill notice
    # Ray and Ray Data suffice to show the switch: joining the session's Ray logs at INFO too
    loud = _run(tmp_path, MIXFLEET_LOG="info", QUICK="1", RAY_ADDRESS=ray_local.address)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "INFO" in loud.stderr and "Traceback" not in loud.stderr  # Ray's own log lines are back


def test_verbose_is_a_global_cli_flag(capsys):
    import logging

    from mixfleet import cli
    from mixfleet.platform import logs

    try:
        assert cli._dispatch(["--verbose", "--version"]) == 0  # anywhere on the line, removed before dispatch
        assert "mixfleet" in capsys.readouterr().out
        assert logs.verbose() and logging.getLogger("ray.serve").level <= logging.INFO
        assert logs.ray_init_kwargs()["log_to_driver"] is True
    finally:
        logs.set_verbose(None)  # back to MIXFLEET_LOG (unset here: quiet)
    assert logging.getLogger("ray.serve").level == logging.ERROR and logs.ray_init_kwargs()["log_to_driver"] is False
