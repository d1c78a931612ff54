"""Binding a process to CPU cores (Linux ``sched_setaffinity``).

A compute replica that shares its cores with the HTTP proxy, the router and
Ray's own processes runs at whatever speed the scheduler leaves it. Serving
engines on CPUs bind their compute to cores for that reason (vLLM's CPU
backend: ``VLLM_CPU_OMP_THREADS_BIND="0-31|32-63"``, one ``|``-separated set
per rank). The same syntax is used here: ``"1"``, ``"0-3,6"``, ``"0-1|2-3"``;
replica ``k`` takes the ``k``-th set (cycling).

Also where the CPU goes: :func:`cpu_seconds_by_role` reads every process's CPU
time from ``/proc`` and sums it per role (the engine replica, the ingress, Serve's
proxy, Ray's own processes, this process), so a benchmark can say which part of a
serving path used the cores during a run.
"""

from __future__ import annotations

import os

from mixfleet.errors import InputError

_WHAT = "use CPU ids like '1', '0-3,6', or one set per replica separated by '|' ('0-1|2-3')"


def parse_cpu_bind(spec: str) -> list[list[int]]:
    """CPU sets of a bind spec (see module doc); a bad spec raises :class:`InputError` naming it."""
    sets = []
    for part in str(spec).split("|"):
        cpus: set[int] = set()
        for item in part.split(","):
            item = item.strip()
            lo, sep, hi = item.partition("-")
            if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
                raise InputError(f"cpu bind '{spec}' has a bad CPU id or range '{item}'", _WHAT)
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first:
                raise InputError(f"cpu bind '{spec}' has a range that runs backwards ('{item}')", _WHAT)
            cpus.update(range(first, last + 1))
        sets.append(sorted(cpus))
    return sets


def cpu_set_for(spec: str, index: int) -> list[int]:
    """The CPU set of the ``index``-th replica under ``spec``."""
    sets = parse_cpu_bind(spec)
    return sets[index % len(sets)]


def bind_process(cpus: list[int]) -> list[int]:
    """Bind every thread of this process (and the threads it starts later) to ``cpus``.

    Returns the CPU set the calling thread had before. ``sched_setaffinity`` acts on one thread, so
    each thread listed in ``/proc/self/task`` is bound; a CPU this process may not use raises
    :class:`InputError`.
    """
    _check(cpus, str(cpus))
    before = sorted(os.sched_getaffinity(0))
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):  # a thread that just ended
            continue
    return before


def process_cpus() -> list[int]:
    """The CPUs any thread of this process may run on (the union over ``/proc/self/task``)."""
    out: set[int] = set()
    for tid in _threads():
        try:
            out |= os.sched_getaffinity(tid)
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(out)


def check_cpu_bind(spec: str) -> list[list[int]]:
    """The sets of ``spec``, each checked against the CPUs of this machine (:class:`InputError` if not)."""
    sets = parse_cpu_bind(spec)
    for cpus in sets:
        _check(cpus, spec)
    return sets


def _check(cpus: list[int], spec: str) -> None:
    allowed = _allowed()
    missing = sorted(set(cpus) - allowed)
    if missing:
        raise InputError(f"cpu bind '{spec}' names CPU(s) {', '.join(map(str, missing))}, which this machine "
                         f"does not give this process (it has {_ranges(sorted(allowed))})",
                         "bind to CPUs this machine has")


def _allowed() -> set[int]:
    """CPUs this process's cgroup gives it (not the calling thread's own, possibly narrowed, set)."""
    for path in ("/sys/fs/cgroup/cpuset.cpus.effective", "/sys/devices/system/cpu/online"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
            if text:
                return {c for s in parse_cpu_bind(text) for c in s}
        except (OSError, InputError):
            continue
    return set(range(os.cpu_count() or 1))


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _ranges(cpus: list[int]) -> str:
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out) or "none"


# (substring, substring, role) tried in order against a process's command line
SERVE_ROLES: tuple[tuple[str, str, str], ...] = (
    ("ServeReplica:", ":engine-", "engine replica"), ("ServeReplica:", "", "other Serve replicas (ingress)"),
    ("ProxyActor", "", "HTTP proxy"), ("ServeController", "", "Serve controller"),
    ("raylet", "", "Ray's own processes"), ("gcs_server", "", "Ray's own processes"),
    ("dashboard", "", "Ray's own processes"), ("log_monitor", "", "Ray's own processes"),
    ("ray::", "", "Ray's own processes"), ("default_worker", "", "Ray's own processes"))


def cpu_seconds_by_role(roles: tuple[tuple[str, str, str], ...] = SERVE_ROLES, me: str = "this process"
                        ) -> dict[str, float]:
    """CPU seconds used so far (user + system, all threads) per role, from Linux ``/proc``: a process
    takes the first role whose two substrings are both in its command line; this process is ``me``;
    ``host`` is every process on the machine (``/proc/stat``, busy time of all CPUs). Processes that
    match no role are counted only in ``host``. Subtract two readings for a run's share."""
    tick, pid, out = os.sysconf("SC_CLK_TCK"), os.getpid(), {}
    for proc in os.scandir("/proc"):
        if not proc.name.isdigit():
            continue
        try:
            with open(f"/proc/{proc.name}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{proc.name}/stat") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        role = me if int(proc.name) == pid else next((r for a, b, r in roles if a in cmd and b in cmd), None)
        if role:
            f = stat[stat.rindex(")") + 2:].split()  # utime, stime: fields 14 and 15 of proc(5)
            out[role] = out.get(role, 0.0) + (int(f[11]) + int(f[12])) / tick
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    out["host"] = (sum(v[:8]) - v[3] - v[4]) / tick  # all but idle and iowait
    return out


def cores_used(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Average cores each role used between two :func:`cpu_seconds_by_role` readings ``wall_s`` apart (a
    process that exits between them takes its CPU time with it: read around a run whose processes live on)."""
    return {k: (after.get(k, v) - v) / wall_s for k, v in before.items()} | {
        k: v / wall_s for k, v in after.items() if k not in before}
