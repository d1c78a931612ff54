"""Shared fixtures, in the test tiers of docs/platform.md (Development).

- unit tests use no fixture from here and no Ray;
- ``ray_local``: one embedded ``connect(num_cpus=2)`` per session;
- ``ray_cluster``: the emulated multi-node fleet (A100/V100/T4 nodes, GPUs
  emulated); tests marked ``multinode`` are sorted last so the session
  switches from the local Ray to the cluster at most once;
- ``cli``: run ``python -m mixfleet ...`` in a subprocess, as a user would.
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


HANG_S = 420  # pytest-timeout (300 s, in pyproject) fails a slow test; this ends a hung session
_stderr_fd: int | None = None


def pytest_configure(config):
    global _stderr_fd
    _stderr_fd = os.dup(sys.__stderr__.fileno())  # the terminal's stderr, not pytest's capture


def _arm_watchdog(seconds: float) -> None:
    """If the session is stuck where pytest-timeout's signal can't reach (a C-level wait, a
    teardown), print every thread's stack and exit 1 instead of hanging CI until its limit."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=_stderr_fd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _arm_watchdog(HANG_S)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("multinode") is not None)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu"):
        try:
            import torch

            ok = torch.cuda.is_available()
        except Exception:
            ok = False
        if not ok:
            pytest.skip("needs a CUDA GPU")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def ray_local():
    """An embedded local Ray shared by the whole session (2 CPUs)."""
    from mixfleet.platform import connect

    return connect(num_cpus=2)


@pytest.fixture(scope="session")
def wait_ready():
    """``wait(url, timeout_s)``: poll ``url`` until it answers 200 (a deployed app is serving) or time runs out."""

    def wait(url: str, timeout_s: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

    return wait


_cluster = None


@pytest.fixture(scope="session")
def ray_cluster():
    """The emulated A100/V100/T4 fleet; replaces the local Ray if one is up.

    Yields the :class:`EmulatedCluster`; ``ray`` is connected to it.
    """
    import ray
    from ray._private import auto_init_hook

    from mixfleet.platform import EmulatedCluster, connect, default_fleet_nodes, shutdown

    global _cluster
    if _cluster is None:
        # From here on nothing may start a Ray of its own. In a full run, a stray Ray call from a thread
        # an earlier test left (a Serve handle's router thread is the likely one) auto-started a local
        # Ray while the cluster came up, and `connect` then joined it instead of the cluster.
        auto_init_hook.enable_auto_connect = False
        if ray.is_initialized():
            shutdown()
        _cluster = EmulatedCluster(default_fleet_nodes(), head_cpus=2).start()
        connect(_cluster.address)
        joined = ray.get_runtime_context().gcs_address
        assert joined == _cluster.address, f"the driver joined {joined}, not the emulated cluster {_cluster.address}"
    yield _cluster


def pytest_sessionfinish(session, exitstatus):
    global _cluster
    _arm_watchdog(300)  # the shutdowns below must not hang the run either
    try:
        from mixfleet.platform import shutdown

        shutdown()
    except Exception:
        pass
    if _cluster is not None:
        _cluster.shutdown()
        _cluster = None


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        return json.loads(self.stdout)

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("error: ")]
        return lines[-1] if lines else ""


@pytest.fixture(scope="session")
def cli():
    """Run ``python -m mixfleet ARGS`` in a subprocess from the repo root."""

    def run(*args: str, timeout: float = 300, cwd: Path | None = None, env: dict | None = None) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("RAY_ADDRESS", None) if "RAY_ADDRESS" not in (env or {}) else None
        proc = subprocess.run([sys.executable, "-m", "mixfleet", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd or REPO, env=full_env)
        return CliResult(proc)

    return run
