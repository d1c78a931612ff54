"""What runs inside a Ray task: one unit (a node or a fused group) or one poll.

A unit task gets its inputs as top-level arguments (Ray resolves object
references, so payloads go worker to worker, never through the driver) and
returns ``(meta, *exports)``: ``meta`` is a small dict the driver reads;
each export is a member's output, or a :class:`ClaimCheck` when it is larger
than the smallest payload limit on its way out (the payload is put in the
object store once and only the reference travels). User errors are caught
and reported in ``meta["error"]`` so the driver can retry without Ray
tracebacks; members on independent branches of a fused group run on threads.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mixfleet.errors import JobError


@dataclass
class ClaimCheck:
    """A payload passed by reference (its ``ref`` is a Ray ObjectRef in a list, so Ray keeps it nested)."""

    ref: list
    kb: float


@dataclass
class UnitTask:
    """Everything a unit task needs; built once per (unit, placement) by the driver."""

    name: str
    members: list[str]
    fns: dict[str, Callable]
    # member -> its inputs in fan-in order: ("ext", arg index | None if not taken) or ("int", member)
    inputs: dict[str, list[tuple[str, Any]]]
    exports: list[str]
    limit_kb: dict[str, float]
    when: dict[tuple[str, str], Callable] = field(default_factory=dict)  # edges leaving a member
    source_members: list[str] = field(default_factory=list)  # get the workflow input (last argument)
    sleep_s: float = 0.0  # injected hop + cold-start latency (emulation "sleep" mode)
    sleep_exec_s: dict[str, float] = field(default_factory=dict)


class UpstreamFailed:
    """Stands in for the outputs of a failed unit, so a unit dispatched behind it stops at once."""


def payload_kb(obj: Any) -> float:
    """Size of a payload in KB (numpy buffers by their bytes, the rest pickled)."""
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes / 1024.0
    if isinstance(obj, (bytes, bytearray, str)):
        return len(obj) / 1024.0
    try:
        return len(pickle.dumps(obj, protocol=5)) / 1024.0
    except Exception:
        return 0.0


def _unwrap(x: Any) -> Any:
    if isinstance(x, ClaimCheck):
        import ray

        return ray.get(x.ref[0])
    return x


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return ""


def run_unit(task: UnitTask, *args: Any):
    """Run the unit's members; returns ``(meta, *exports)``."""
    if task.sleep_s:
        time.sleep(task.sleep_s)
    if any(isinstance(a, UpstreamFailed) for a in args):
        return ({"error": "an upstream unit failed", "upstream_failed": True},
                *[UpstreamFailed() for _ in task.exports])
    args = [_unwrap(a) for a in args]
    outputs: dict[str, Any] = {}
    ran: dict[str, bool] = {}
    exec_s: dict[str, float] = {}
    take: dict[str, bool] = {}
    meta: dict[str, Any] = {"node_id": _node_id(), "error": None}

    def run_member(m: str) -> None:
        vals = []
        for kind, key in task.inputs[m]:
            if kind == "ext":
                if key is not None:
                    vals.append(args[key])
            elif ran.get(key) and take.get(f"{key}->{m}", True):
                vals.append(outputs[key])
        if m in task.source_members:
            vals = [args[-1]]
        elif not vals:
            ran[m] = False
            return
        payload = vals[0] if len(vals) == 1 and len(task.inputs[m]) == 1 or m in task.source_members else vals
        t0 = time.perf_counter()
        if task.sleep_exec_s.get(m):
            time.sleep(task.sleep_exec_s[m])
        outputs[m] = task.fns[m](payload)
        exec_s[m] = time.perf_counter() - t0
        ran[m] = True
        for (u, v), pred in task.when.items():
            if u == m:
                take[f"{u}->{v}"] = bool(pred(outputs[m]))

    current = None
    try:
        if len(task.members) == 1:
            current = task.members[0]
            run_member(current)
        else:
            _run_threaded(task, run_member)
    except _MemberFailed as exc:
        meta["error"] = f"{exc.member}: {exc.cause}"
        meta["transient"] = exc.transient
    except Exception as exc:  # a user function raised: report, the driver decides on retries
        meta["error"] = f"{current}: {type(exc).__name__}: {exc}"
        meta["transient"] = is_transient(exc)
    meta.update(ran={m: bool(ran.get(m)) for m in task.members}, exec_s=exec_s, take=take, out_kb={}, claim={})
    if meta["error"]:
        return (meta, *[UpstreamFailed() for _ in task.exports])
    exports = []
    for m in task.exports:
        if not ran.get(m):
            exports.append(None)
            continue
        out = outputs[m]
        kb = payload_kb(out)
        meta["out_kb"][m] = kb
        if kb > task.limit_kb.get(m, float("inf")):
            import ray

            out = ClaimCheck([ray.put(out)], kb)
            meta["claim"][m] = True
        exports.append(out)
    return (meta, *exports)


# errors a second attempt can fix: the environment, not the function's logic on its input
TRANSIENT = (TimeoutError, ConnectionError, OSError, MemoryError)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry can fix ``exc`` (I/O, network, timeouts); a ``KeyError`` in the user's code cannot."""
    return isinstance(exc, TRANSIENT) or bool(getattr(exc, "transient", False))


class _MemberFailed(JobError):
    def __init__(self, member: str, cause: str, transient: bool = False):
        super().__init__(cause)
        self.member, self.cause, self.transient = member, cause, transient


def _run_threaded(task: UnitTask, run_member: Callable[[str], None]) -> None:
    """Run a fused group's members, independent branches in parallel threads."""
    inside = set(task.members)
    futures: dict[str, Any] = {}

    def body(m: str) -> None:
        for kind, key in task.inputs[m]:
            if kind == "int" and key in inside:
                futures[key].result()
        try:
            run_member(m)
        except _MemberFailed:
            raise
        except Exception as exc:
            raise _MemberFailed(m, f"{type(exc).__name__}: {exc}", is_transient(exc)) from None

    with ThreadPoolExecutor(max_workers=len(task.members)) as pool:
        for m in task.members:  # topological order: a member's futures exist before it waits on them
            futures[m] = pool.submit(body, m)
        for m in task.members:
            futures[m].result()


def run_poll(poll: Callable, handle: Any):
    """One poll of an async node: ``poll(handle) -> (done, result)``; returns ``(meta, result)``."""
    handle = _unwrap(handle)
    try:
        done, result = poll(handle)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "done": False, "transient": is_transient(exc)}, None
    meta = {"error": None, "done": bool(done), "out_kb": payload_kb(result) if done else 0.0}
    return meta, (result if done else None)
