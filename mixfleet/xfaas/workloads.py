"""The XFaaS / XFBench request-rate shapes, read the way XFaaS's stage script reads them.

Each CSV row is ``duration,request_rate`` (copied verbatim from XFaaS CCGRID2024
``serwo/benchmark_resources/dynamism/<shape>/config.csv``, Apache-2.0). XFaaS's
``xfaas_bench_stage.py`` uses the ``sawtooth`` and ``alibaba`` rows as absolute seconds and
requests per second, and multiplies the ``static`` and ``step_function`` rows by the run's
``--duration`` and ``--max-rps`` arguments; :func:`read_shape` does the same (``duration`` and
``max_rps`` default to 1, which reads ``static`` as 300 s at 1 rps and ``step`` as five 60 s
steps of 1, 4, 8, 4, 1 rps). Within a row requests arrive evenly spaced at the row's rate, as
JMeter's constant-throughput timer sends them.
"""

from __future__ import annotations

from pathlib import Path

from mixfleet.errors import InputError, unknown_name

DATA = Path(__file__).with_name("data") / "workloads"
SHAPES = {"alibaba": "alibaba.csv", "sawtooth": "sawtooth.csv", "step": "step_function.csv", "static": "static.csv"}
ABSOLUTE = {"alibaba", "sawtooth"}


def read_shape(name: str, *, duration: float = 1.0, max_rps: float = 1.0) -> list[tuple[float, float]]:
    """``[(seconds, requests/s)]`` of a named shape."""
    if name not in SHAPES:
        raise unknown_name("workload", name, list(SHAPES))
    if duration <= 0 or max_rps <= 0:
        raise InputError(f"duration {duration} and max rps {max_rps} must be positive", "pass values > 0")
    rows = []
    for line in (DATA / SHAPES[name]).read_text().splitlines():
        vals = [float(x) for x in line.strip().split(",") if x != ""]
        if len(vals) < 2:
            continue
        d, r = vals[0], vals[1]
        rows.append((d, r) if name in ABSOLUTE else (d * duration, r * max_rps))
    return rows


def arrivals(rows: list[tuple[float, float]], rate_scale: float = 1.0) -> list[float]:
    """Arrival times (s since the start) of every request: evenly spaced within each row."""
    out, t0 = [], 0.0
    for d, r in rows:
        r *= rate_scale
        n = int(round(d * r))
        out += [t0 + (k + 0.5) / r for k in range(n)] if n else []
        t0 += d
    return out


def total_s(rows: list[tuple[float, float]]) -> float:
    return sum(d for d, _ in rows)
