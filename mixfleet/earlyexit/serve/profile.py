"""Where a replica's and the proxy's CPU goes during a burst: py-spy (ships with Ray) in the background.

:func:`profile_later` starts, after a delay, ``py-spy record --format raw``
on each named process for a few seconds (sampling from outside; the
processes are not slowed beyond the sampler's own CPU) and summarises the
collapsed stacks into the share of samples per leaf function and per
category (JSON, torch, HTTP/ASGI, gRPC, asyncio, Ray Serve internals,
idle waits), with ``--idle`` so that waiting shows as such.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

CATEGORIES = (("idle", ("select", "epoll", "poll (", "wait (", "_wait_for_tstate_lock", "sleep")),
              ("json", ("json", "loads_body", "_float", "_too_deep", "parse_instances", "_numbers_only")),
              ("torch", ("torch", "conv", "forward", "run_exits", "_call_impl")),
              ("http/asgi", ("uvicorn", "starlette", "fastapi", "h11", "httptools", "asgi")),
              ("grpc", ("grpc",)), ("ray serve", ("ray/serve", "serve/_private")), ("asyncio", ("asyncio",)))


def summarise(raw: str, top: int = 8) -> dict:
    """Collapsed stacks (``a;b;c N`` per line) -> sample shares per category and per leaf function."""
    leaf, cats, total = Counter(), Counter(), 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = stack.split(";")
        leaf[frames[-1][:90]] += k
        cat = next((c for c, keys in CATEGORIES if any(key in frames[-1] for key in keys)), None)
        if cat is None:  # by the deepest frame that names a category
            cat = next((c for f in reversed(frames) for c, keys in CATEGORIES if any(key in f for key in keys)),
                       "other")
        cats[cat] += k
    share = lambda c: {k: round(v / total, 3) for k, v in c.most_common(top)} if total else {}  # noqa: E731
    return {"samples": total, "by_category": share(cats), "top_leaf_functions": share(leaf)}


def profile_later(pids: dict[str, int], delay_s: float, seconds: float, into: dict) -> threading.Thread | None:
    """In a thread: wait ``delay_s``, then record every ``{name: pid}`` for ``seconds``; summaries go to ``into``."""
    beside = Path(sys.executable).with_name("py-spy")  # the venv's bin, which need not be on PATH
    exe = str(beside) if beside.is_file() else shutil.which("py-spy")
    if exe is None:
        into["error"] = "py-spy is not installed (it ships with ray[default])"
        return None

    def run() -> None:
        time.sleep(delay_s)
        with tempfile.TemporaryDirectory() as tmp:
            procs = {}
            for name, pid in pids.items():
                out = Path(tmp) / f"{name}.txt"
                procs[name] = (out, subprocess.Popen(
                    [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100", "--idle", "--nonblocking",
                     "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            for name, (out, p) in procs.items():
                try:
                    _, err = p.communicate(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    err = "timed out"
                into[name] = summarise(out.read_text()) if out.is_file() else {"error": (err or "")[-200:]}

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def proxy_pid() -> int | None:
    """The Serve HTTP/gRPC proxy actor's process on this node (from Ray's state API)."""
    try:
        from ray.util.state import list_actors

        for a in list_actors(filters=[("state", "=", "ALIVE")]):
            if "Proxy" in (a.class_name or ""):
                return a.pid
    except Exception:  # noqa: BLE001 - no state API (no dashboard): profile the replica alone
        return None
    return None
