"""Test functions for mixfleet.xfaas (loaded by file path, pickled by value to Ray workers)."""

from __future__ import annotations

import os
import time


def inc(p):
    return {"x": p["x"] + 1, "path": p.get("path", []) + ["inc"], **{k: v for k, v in p.items() if k not in ("x", "path")}}


def tag(name):
    def f(p):
        return {"who": name, "x": p["x"]}

    f.__name__ = f"tag_{name}"
    return f


tag_a, tag_b, tag_c = tag("a"), tag("b"), tag("c")


def slow_tag(p):
    time.sleep(0.3)  # finishes last, but fan-in order must still follow the spec
    return {"who": "slow", "x": p["x"]}


def gather(parts):
    return [q["who"] for q in parts]


def flaky(p):
    """Fails until the counter file shows ``p['fail_times']`` failures."""
    path = p["counter"]
    n = int(open(path).read()) if os.path.exists(path) else 0
    if n < p["fail_times"]:
        with open(path, "w") as f:
            f.write(str(n + 1))
        raise ConnectionError(f"transient failure {n + 1}")
    return {"ok": True, "failures_before": n}


def dies_once(p):
    """The first call kills its own worker process (a crashed sandbox); later calls return ``p``."""
    path = p["counter"]
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("died")
        os._exit(1)
    return p


def sleepy(p):
    time.sleep(p.get("sleep_s", 5))
    return p


def big(p):
    return {"blob": b"x" * int(p["kb"] * 1024)}


def size_of(p):
    return {"kb": len(p["blob"]) / 1024}


def is_big(p):
    return p["x"] > 10


def is_small(p):
    return p["x"] <= 10


def where(p):
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "x": p.get("x", 0)}


def xfaas_style_double(obj):
    """An XFaaS-style function: SerWOObject in, SerWOObject out."""
    from mixfleet.xfaas.functions import SerWOObject

    body = obj.get_body()
    return SerWOObject(body={"x": body["x"] * 2})


def touch(p):
    """Leaves a marker file: tests use it to prove a node did (or did not) run."""
    open(p["marker"], "w").close()
    return p
