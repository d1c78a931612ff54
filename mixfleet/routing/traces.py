"""Request traces: the Azure LLM inference CSV, the Mooncake JSONL, and generators.

A trace is a re-iterable source of :class:`TraceRow` ``(arrival_s, prompt,
output)`` sorted by arrival, with arrivals relative to the first row.
Sources stream their rows (a file is read row by row, generators draw
lazily), so memory does not grow with the trace. :func:`trace_stats`
makes one streaming pass for the figures that load scaling needs.

Accepted specs (``--trace``):

- a path ending ``.csv`` / ``.csv.gz``: Azure 2023 format
  ``TIMESTAMP,ContextTokens,GeneratedTokens``;
- a path ending ``.jsonl`` / ``.jsonl.gz``: Mooncake format (``timestamp``
  ms, ``input_length``, ``output_length``, ``hash_ids``);
- ``azure-conv`` / ``azure-code``: the Azure traces bundled in the package;
  ``mooncake-conv``: the Mooncake conversation trace bundled likewise;
- ``poisson:n=N,rate=R``, ``gamma:n=N,rate=R,cv=C`` (bursty) and
  ``diurnal:n=N,rate=R,period=S,amplitude=A``; all take ``seed``,
  ``prompt_mean`` and ``output_mean`` (log-normal sizes).

Bad rows raise :class:`~mixfleet.errors.InputError` naming the file and row
number (1-based, header = row 1); an empty trace is an error too.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import numpy as np

from mixfleet.errors import InputError, first_line, unknown_name

AZURE_HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
BUNDLED = {"azure-conv": "azure_conv_2023.csv.gz", "azure-code": "azure_code_2023.csv.gz",
           "mooncake-conv": "mooncake_conversation.jsonl.gz"}
GENERATORS = ("poisson", "gamma", "diurnal")


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrival_s: float
    prompt: int
    output: int


class Trace:
    """A re-iterable, streaming source of rows; ``time_scale`` stretches arrivals."""

    def __init__(self, name: str, opener, time_scale: float = 1.0) -> None:
        self.name = name
        self._opener = opener
        self.time_scale = time_scale

    def __iter__(self) -> Iterator[TraceRow]:
        if self.time_scale == 1.0:
            yield from self._opener()
            return
        s = self.time_scale
        for row in self._opener():
            yield TraceRow(row.arrival_s * s, row.prompt, row.output)

    def scaled(self, time_scale: float) -> Trace:
        return Trace(self.name, self._opener, self.time_scale * time_scale)

    def head(self, n: int) -> Trace:
        """The first ``n`` rows only."""
        opener = self._opener

        def gen():
            for i, row in enumerate(opener()):
                if i >= n:
                    return
                yield row

        return Trace(f"{self.name}[:{n}]", gen, self.time_scale)


@dataclass(frozen=True)
class TraceStats:
    requests: int
    duration_s: float
    prompt_mean: float
    prompt_sq_mean: float
    output_mean: float

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else float("inf")


def trace_stats(trace: Trace) -> TraceStats:
    """One streaming pass: count, duration, mean sizes. Raises on an empty trace."""
    n, p, p2, o, first, last = 0, 0.0, 0.0, 0.0, None, 0.0
    for row in trace:
        if first is None:
            first = row.arrival_s
        last = row.arrival_s
        n += 1
        p += row.prompt
        p2 += row.prompt * row.prompt
        o += row.output
    if n == 0:
        raise InputError(f"trace '{trace.name}' is empty", "give a trace with at least one request")
    # a trace's span is n inter-arrival gaps; estimate the last gap by the mean one
    span = (last - first) * (n / (n - 1)) if n > 1 else 1.0
    return TraceStats(n, span, p / n, p2 / n, o / n)


# -- files -----------------------------------------------------------------------
def _open_text(path: Path):
    raw = path.open("rb")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


def _guarded(path: Path, rows: Callable[[Path], Iterator[TraceRow]]) -> Iterator[TraceRow]:
    """``rows(path)``, with unreadable bytes (a truncated gzip, not UTF-8) turned into one InputError."""
    try:
        yield from rows(path)
    except EOFError:
        raise InputError(f"trace '{path}' is truncated (the gzip stream ends early)",
                         "copy or download the file again") from None
    except (OSError, zlib.error, UnicodeDecodeError) as exc:
        raise InputError(f"trace '{path}' can't be read: {first_line(exc)}",
                         "give an Azure .csv or Mooncake .jsonl file, as UTF-8 text (optionally gzip-compressed)") from None


def _bad(path, row: int, why: str) -> InputError:
    return InputError(f"bad row {row} in trace '{path}': {why}",
                      "fix or remove that row (tokens are positive integers, times ascending)")


def _check(path, row: int, t: float, prev: float, prompt: int, output: int) -> None:
    if prompt < 1:
        raise _bad(path, row, f"prompt tokens {prompt} must be >= 1")
    if output < 1:
        raise _bad(path, row, f"output tokens {output} must be >= 1")
    if not math.isfinite(t):
        raise _bad(path, row, f"timestamp {t} is not finite")
    if t < prev:
        raise _bad(path, row, "timestamp goes back in time (rows must be sorted by arrival)")


def _azure_rows(path: Path) -> Iterator[TraceRow]:
    with _open_text(path) as f:
        header = f.readline().strip().split(",")
        if [h.strip() for h in header] != AZURE_HEADER:
            raise InputError(f"trace '{path}' does not start with the Azure header {','.join(AZURE_HEADER)}",
                             "use an Azure LLM inference CSV or a Mooncake .jsonl")
        t0 = None
        prev = 0.0
        for row_no, line in enumerate(f, start=2):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            if len(parts) != 3:
                raise _bad(path, row_no, f"expected 3 columns, got {len(parts)}")
            try:
                ts = datetime.fromisoformat(parts[0].strip()[:26]).timestamp()
                prompt, output = int(parts[1]), int(parts[2])
            except ValueError as exc:
                raise _bad(path, row_no, str(exc)) from None
            if t0 is None:
                t0 = ts
            t = ts - t0
            _check(path, row_no, t, prev, prompt, output)
            prev = t
            yield TraceRow(t, prompt, output)


def _mooncake_rows(path: Path) -> Iterator[TraceRow]:
    with _open_text(path) as f:
        t0 = None
        prev = 0.0
        for row_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
                ts = float(obj["timestamp"]) / 1000.0
                prompt, output = int(obj["input_length"]), int(obj["output_length"])
            except (ValueError, TypeError) as exc:
                raise _bad(path, row_no, f"not a JSON object with numeric fields ({exc})") from None
            except KeyError as exc:
                raise _bad(path, row_no, f"missing field {exc}") from None
            if t0 is None:
                t0 = ts
            t = ts - t0
            _check(path, row_no, t, prev, prompt, output)
            prev = t
            yield TraceRow(t, prompt, output)


# -- generators --------------------------------------------------------------------
def _sizes(rng: np.random.Generator, n: int, prompt_mean: float, output_mean: float, sigma: float = 0.8):
    mu_p = math.log(prompt_mean) - sigma * sigma / 2
    mu_o = math.log(output_mean) - sigma * sigma / 2
    p = np.maximum(1, np.rint(rng.lognormal(mu_p, sigma, n))).astype(np.int64)
    o = np.maximum(1, np.rint(rng.lognormal(mu_o, sigma, n))).astype(np.int64)
    return p, o


def _generated(kind: str, n: int, rate: float, seed: int, prompt_mean: float, output_mean: float,
               cv: float, period: float, amplitude: float, chunk: int = 65536) -> Iterator[TraceRow]:
    rng = np.random.default_rng(seed)
    t = 0.0
    left = n
    while left > 0:
        m = min(chunk, left)
        if kind == "poisson":
            gaps = rng.exponential(1.0 / rate, m)
        elif kind == "gamma":  # gamma inter-arrivals with coefficient of variation cv
            shape = 1.0 / (cv * cv)
            gaps = rng.gamma(shape, 1.0 / (rate * shape), m)
        else:  # diurnal: thinning of a Poisson process with a sinusoidal rate
            peak = rate * (1 + amplitude)
            gaps = np.empty(m)
            k, tt = 0, t
            while k < m:
                cand = tt + np.cumsum(rng.exponential(1.0 / peak, 2 * (m - k)))
                lam = rate * (1 + amplitude * np.sin(2 * math.pi * cand / period))
                keep = cand[rng.random(cand.size) * peak < lam]
                take = keep[: m - k]
                prev = np.concatenate(([tt], take[:-1])) if take.size else take
                gaps[k:k + take.size] = take - prev
                k += take.size
                tt = float(take[-1]) if take.size else float(cand[-1])
        p, o = _sizes(rng, m, prompt_mean, output_mean)
        times = t + np.cumsum(gaps)
        for ti, pi, oi in zip(times.tolist(), p.tolist(), o.tolist(), strict=True):
            yield TraceRow(ti, pi, oi)
        t = float(times[-1])
        left -= m


def _parse_generator(spec: str) -> Trace:
    kind, _, rest = spec.partition(":")
    opts: dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise InputError(f"bad generator option '{item}' in trace '{spec}'", "write options as key=value")
        try:
            opts[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"generator option '{key}' in '{spec}' is not a number: {value!r}",
                             "give a number") from None
    valid = {"n", "rate", "seed", "prompt_mean", "output_mean", "cv", "period", "amplitude"}
    for key in opts:
        if key not in valid:
            raise unknown_name("generator option", key, valid)
    n = int(opts.get("n", 10000))
    rate = opts.get("rate", 5.0)
    if n < 1 or rate <= 0:
        raise InputError(f"generator '{spec}' needs n >= 1 and rate > 0", "fix n or rate")
    args = dict(n=n, rate=rate, seed=int(opts.get("seed", 0)), prompt_mean=opts.get("prompt_mean", 1000.0),
                output_mean=opts.get("output_mean", 200.0), cv=opts.get("cv", 4.0),
                period=opts.get("period", 600.0), amplitude=min(0.95, opts.get("amplitude", 0.5)))
    return Trace(spec, lambda: _generated(kind, **args))


def open_trace(spec: str | Path) -> Trace:
    """Resolve a trace spec (see module doc) to a streaming :class:`Trace`."""
    text = str(spec)
    if text in BUNDLED:
        ref = resources.files("mixfleet.routing").joinpath("data").joinpath(BUNDLED[text])
        path = Path(str(ref))
        rows = _mooncake_rows if text.startswith("mooncake") else _azure_rows
        return Trace(text, lambda: rows(path))
    kind = text.partition(":")[0]
    if kind in GENERATORS and not Path(text).exists():
        return _parse_generator(text)
    path = Path(text)
    if not path.exists():
        raise InputError(f"trace '{text}' does not exist",
                         f"give a .csv/.jsonl path, one of {', '.join(BUNDLED)}, or a generator "
                         f"({', '.join(g + ':n=...,rate=...' for g in GENERATORS)})")
    name = path.name.lower().removesuffix(".gz")
    if path.is_dir():
        raise InputError(f"trace '{text}' is a folder", "give a .csv or .jsonl file (optionally .gz)")
    if path.suffix == ".gz":
        with path.open("rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise InputError(f"trace '{text}' is not gzip-compressed although it ends in .gz",
                                 "compress it with gzip, or drop the .gz suffix")
    if name.endswith(".csv"):
        return Trace(text, lambda: _guarded(path, _azure_rows))
    if name.endswith(".jsonl"):
        return Trace(text, lambda: _guarded(path, _mooncake_rows))
    raise InputError(f"trace '{text}' has an unknown format",
                     "use an Azure .csv (TIMESTAMP,ContextTokens,GeneratedTokens) or a Mooncake .jsonl")
