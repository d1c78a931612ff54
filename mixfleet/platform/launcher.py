"""Launch and stop a rehearsal cluster with Ray's own autoscaler, on this machine.

``mixfleet cluster up examples/cluster/local.yaml`` runs what Ray documents
for testing autoscaling locally::

    RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=BOOTSTRAP

Ray's autoscaler (its ``monitor.py``, on the head) then reads the node types
and launches worker nodes through the fake multi-node provider: each is a
real raylet on this machine, started and terminated by the autoscaler as
demand comes and goes. GPUs are EMULATED (logical resources, no device).

Isolation from any other Ray on the machine: every port is picked free, the
cluster gets its own ``--temp-dir``, and ``ray start`` runs in a new session,
so ``cluster down`` stops exactly this cluster's processes (never ``ray stop``,
which would stop every Ray of the user). The state directory holds
``state.json`` (addresses, session id), the bootstrap config, ``up.log``, the
cluster's token and Ray's logs; it is ``/tmp/mixfleet-<cluster_name>`` unless
``MIXFLEET_CLUSTER_DIR`` names another (short: Unix socket paths are limited).

Access: Ray's gRPC servers (GCS, raylets) listen on every interface whatever
the node address, so the cluster runs with Ray's token authentication
(``RAY_AUTH_MODE=token``) and a fresh token of its own, readable by this user
only (``auth_token`` in the state directory, never ``~/.ray/auth_token``, which
would switch every other local Ray of the user to token mode). The head
advertises 127.0.0.1 and the dashboard listens there only. Ray's CLIs reach
the cluster with :func:`client_env` in their environment.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mixfleet.errors import ClusterError
from mixfleet.platform.bootstrap import LOOPBACK, free_port
from mixfleet.platform.cluster_config import ClusterSpec
from mixfleet.platform.local_cluster import EMULATED_LABEL, NODE_TYPE_LABEL
from mixfleet.platform.output import atomic_write_text

STATE_FILE = "state.json"
# The fake provider tags the node `ray start --head` runs as with this type name.
RAY_FAKE_HEAD_TYPE = "ray.head.default"
KV_NAMESPACE = "mixfleet"
KV_NODE_TYPES = "cluster_node_types"
TOKEN_FILE = "auth_token"


def cluster_dir(cluster_name: str) -> Path:
    return Path(os.environ.get("MIXFLEET_CLUSTER_DIR") or f"/tmp/mixfleet-{cluster_name}")


def read_state(cluster_name: str) -> dict[str, Any] | None:
    p = cluster_dir(cluster_name) / STATE_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def client_env(state: dict[str, Any]) -> dict[str, str]:
    """What Ray's CLIs and drivers need in their environment to reach the cluster (its token)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["auth_token_path"]}


def use_cluster_auth(state: dict[str, Any]) -> None:
    """Authenticate this process (a CLI, not yet connected to any Ray) to the cluster."""
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the cluster's token file
    os.environ.update(client_env(state))
    if "ray._raylet" in sys.modules:  # Ray read its config already: make it read the mode and token again
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")  # as Ray's own _enable_token_auth does
        AuthenticationTokenLoader.instance().reset_cache()


def _new_token(path: Path) -> None:
    """A fresh 256-bit token (Ray's own format), readable by this user only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def bootstrap_config(spec: ClusterSpec, gcs_address: str) -> dict[str, Any]:
    """The config Ray's autoscaler runs with: the file as written, wired to this head.

    The head type is renamed to the one the fake provider gives the head node,
    each node type is labelled with its name (and GPU types as emulated), and
    the provider learns the head's GCS address.
    """
    config = copy.deepcopy(spec.raw)
    types = config["available_node_types"]
    types[RAY_FAKE_HEAD_TYPE] = types.pop(spec.head_node_type)
    config["head_node_type"] = RAY_FAKE_HEAD_TYPE
    for name, body in types.items():
        labels = {NODE_TYPE_LABEL: spec.head_node_type if name == RAY_FAKE_HEAD_TYPE else name}
        if body.get("resources", {}).get("GPU"):
            labels[EMULATED_LABEL] = "true"
        body["labels"] = {**labels, **body.get("labels", {})}
    config["provider"] = {"use_node_id_as_ip": True, "disable_node_updaters": True,
                          "disable_launch_config_check": True, **config["provider"], "gcs_address": gcs_address}
    return config


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[4])  # fields after "comm": state ppid pgrp session


def cluster_processes(state: dict[str, Any]) -> list[int]:
    """Alive processes of this cluster: in its session, or naming its temp dir."""
    me = os.getpid()
    needle = state["temp_dir"].encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmdline:
            continue  # a zombie or kernel thread
        if _session_of(pid) == state["session"] or needle in cmdline:
            out.append(pid)
    return sorted(out)


def is_up(state: dict[str, Any] | None) -> bool:
    """The head's GCS answers on its port."""
    import socket

    if not state:
        return False
    host, _, port = state["address"].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def live_clusters() -> list[dict[str, Any]]:
    """Rehearsal clusters started by ``cluster up`` that are running now."""
    dirs = ([Path(os.environ["MIXFLEET_CLUSTER_DIR"])] if os.environ.get("MIXFLEET_CLUSTER_DIR")
            else sorted(Path("/tmp").glob("mixfleet-*")))
    states = []
    for d in dirs:
        try:
            states.append(json.loads((d / STATE_FILE).read_text()))
        except (OSError, ValueError):
            continue
    return [s for s in states if is_up(s)]


def start(spec: ClusterSpec, file: str, *, timeout_s: float = 180) -> dict[str, Any]:
    """``ray start --head`` with the autoscaler for ``spec``; returns the recorded state."""
    d = cluster_dir(spec.cluster_name)
    old = read_state(spec.cluster_name)
    if is_up(old):
        raise ClusterError(f"cluster '{spec.cluster_name}' is already up at {old['address']}",
                           f"use it, or stop it first: mixfleet cluster down {old['file']}")
    if old:
        stop_processes(old)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("gcs", "dashboard", "client", "agent", "agent_grpc", "metrics",
                                      "runtime_env_agent")}
    address = f"{LOOPBACK}:{ports['gcs']}"
    boot = d / "bootstrap.json"
    atomic_write_text(boot, json.dumps(bootstrap_config(spec, address), indent=1))
    head = spec.head
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address", LOOPBACK,
           "--port", str(ports["gcs"]), "--autoscaling-config", str(boot), "--temp-dir", str(d / "ray"),
           "--num-cpus", str(int(head.cpus)), "--num-gpus", str(int(head.gpus)),
           *(["--object-store-memory", str(int(head.resources["object_store_memory"]))]
             if "object_store_memory" in head.resources else []),
           "--include-dashboard", "true", "--dashboard-host", LOOPBACK, "--dashboard-port", str(ports["dashboard"]),
           "--ray-client-server-port", str(ports["client"]),
           "--dashboard-agent-listen-port", str(ports["agent"]),
           "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
           "--metrics-export-port", str(ports["metrics"]),
           "--runtime-env-agent-port", str(ports["runtime_env_agent"]), "--disable-usage-stats"]
    token = d / TOKEN_FILE
    _new_token(token)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           # `python`/`mixfleet` in job entrypoints are this environment's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    log = d / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL)
    state = {"cluster_name": spec.cluster_name, "file": file, "address": address,
             "dashboard": f"http://{LOOPBACK}:{ports['dashboard']}", "temp_dir": str(d / "ray"),
             "session": proc.pid, "ports": ports, "state_dir": str(d), "emulated": True,
             "auth_token_path": str(token), "started": time.time()}
    atomic_write_text(d / STATE_FILE, json.dumps(state, indent=1))  # before waiting: `down` can clean up
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        rc = None
    if rc != 0 or not is_up(state):
        stop_processes(state)
        (d / STATE_FILE).unlink(missing_ok=True)
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["no output"]
        raise ClusterError(f"`ray start --head` failed for '{file}': {tail[0][:300]}", f"see {log}")
    try:
        use_cluster_auth(state)
        publish_node_types(spec, address)
    except Exception as exc:
        stop_processes(state)
        (d / STATE_FILE).unlink(missing_ok=True)
        raise ClusterError(f"the head of '{file}' started but did not take its node types: {exc}",
                           f"see Ray's logs under {state['temp_dir']}") from None
    return state


def publish_node_types(spec: ClusterSpec, gcs_address: str) -> None:
    """Record the node types the autoscaler can launch in the cluster's KV store.

    Applications read it with :func:`launchable_gpus` to plan for GPU types
    that have no node yet (the autoscaler adds one when asked).
    """
    from ray._raylet import GcsClient

    types = {n: {"resources": t.resources, "min_workers": t.min_workers, "max_workers": t.max_workers,
                 "head": t.is_head} for n, t in spec.node_types.items()}
    GcsClient(address=gcs_address).internal_kv_put(KV_NODE_TYPES.encode(), json.dumps(types).encode(), True,
                                                   KV_NAMESPACE.encode())


def published_node_types() -> dict[str, dict] | None:
    """The node types :func:`publish_node_types` recorded (needs a connected Ray), or ``None``."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    raw = _internal_kv_get(KV_NODE_TYPES, namespace=KV_NAMESPACE)
    return json.loads(raw) if raw else None


def launchable_gpus() -> dict[str, float]:
    """GPUs per accelerator type the autoscaler may launch in all ({} when no node types are published)."""
    from mixfleet.platform.accelerators import accelerator_of

    out: dict[str, float] = {}
    for body in (published_node_types() or {}).values():
        accel = accelerator_of(body["resources"])
        if accel and not body["head"]:
            out[accel] = out.get(accel, 0.0) + body["resources"].get("GPU", 0) * body["max_workers"]
    return out


def stop_processes(state: dict[str, Any], grace_s: float = 8.0) -> list[int]:
    """SIGTERM every process of the cluster, then SIGKILL what is left after ``grace_s``."""
    seen: set[int] = set()
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while True:
        pids = cluster_processes(state)
        if not pids:
            return sorted(seen)
        if time.monotonic() > deadline + 30:
            raise ClusterError(f"processes {pids} of cluster '{state['cluster_name']}' survive SIGKILL",
                               "check them with `ps`; they may be stuck in the kernel")
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            if pid not in seen or sig == signal.SIGKILL:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            seen.add(pid)
        time.sleep(0.5)


def stop(cluster_name: str) -> dict[str, Any]:
    """Stop the recorded cluster; returns ``{stopped: bool, processes: n}``."""
    state = read_state(cluster_name)
    if state is None:
        return {"stopped": False, "processes": 0}
    killed = stop_processes(state)
    (cluster_dir(cluster_name) / STATE_FILE).unlink(missing_ok=True)
    (cluster_dir(cluster_name) / TOKEN_FILE).unlink(missing_ok=True)
    return {"stopped": True, "processes": len(killed), "address": state["address"]}
