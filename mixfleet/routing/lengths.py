"""What a router may know about output lengths: client caps and one shared online predictor.

The information model (docs/routing.md, "Information model"):

- a request's **true output length** is hidden: only the engine sees it (the
  emulated model stops at EOS, which is where the trace's output ends);
- the router sees the prompt length and the client's ``max_tokens`` **cap**,
  set by a :class:`CapRule`:

  ``app``    a fixed per-application cap, as a client library sets it:
             1,024 tokens for code completion, 2,048 for conversation (the
             application is read from the trace name: ``code`` in it means
             code); a trace output above the cap is cut to the cap (the client
             would have stopped it there);
  ``pow2``   the true length rounded up to a power of two (a milder case: the
             client's cap is within 2x of the answer);
  ``oracle`` the cap *is* the true length (the old mode, an ablation only:
             ``--oracle-lengths``);

- every policy may predict the output length online from *completed*
  requests with the one shared :class:`OutputPredictor` (per prompt-length
  bucket, the recent outputs' mean and quantiles, never above the cap), so
  no policy gets information another lacks. In ``oracle`` mode the
  predictor returns the cap.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from mixfleet.errors import unknown_name

CAP_RULES = ("app", "pow2", "oracle")
APP_CAPS = {"code": 1024, "conversation": 2048}


def app_of(trace_name: str) -> str:
    """The application a trace comes from: ``code`` if its name says so, else ``conversation``."""
    return "code" if "code" in trace_name.lower() else "conversation"


@dataclass(frozen=True)
class CapRule:
    """How the client's ``max_tokens`` cap is set for each request (see the module doc)."""

    kind: str = "app"
    app: str = "conversation"

    def __post_init__(self) -> None:
        if self.kind not in CAP_RULES:
            raise unknown_name("cap rule", self.kind, CAP_RULES)

    @classmethod
    def for_trace(cls, kind: str, trace_name: str) -> CapRule:
        return cls(kind, app_of(trace_name))

    @property
    def oracle(self) -> bool:
        return self.kind == "oracle"

    def apply(self, output: int) -> tuple[int, int]:
        """(the cap the client sends, the output the engine will generate) for a trace output length."""
        if self.kind == "oracle":
            return output, output
        if self.kind == "pow2":
            return 1 << max(0, int(output - 1).bit_length()), output
        cap = APP_CAPS[self.app]
        return cap, min(output, cap)


PROMPT_BUCKETS = (128, 512, 1024, 2048, 4096, 8192)


class OutputPredictor:
    """Online output-length prediction from completed requests (one instance per router).

    Per prompt-length bucket it keeps the last ``window`` completed output
    lengths; :meth:`predict` returns the bucket's mean (or ``quantile``) of
    them, clipped to the request's cap. A bucket with fewer than ``min_count``
    samples borrows the pooled history of all buckets; with no history at all
    the prior is ``min(cap, prior)``. Statistics are refreshed every
    ``refresh`` completions, so a prediction costs a bisect and a lookup.
    ``oracle=True`` returns the cap (the cap is the true length in that mode).
    """

    def __init__(self, *, oracle: bool = False, window: int = 2000, min_count: int = 20, refresh: int = 200,
                 prior: float = 256.0, edges: tuple[int, ...] = PROMPT_BUCKETS) -> None:
        self.oracle = oracle
        self.window, self.min_count, self.refresh, self.prior = window, min_count, refresh, prior
        self.edges = edges
        n = len(edges) + 2  # one per bucket, and the pooled history last
        self._hist = np.zeros((n, window))
        self._count = [0] * n   # samples held (at most window)
        self._pos = [0] * n
        self._ready = [0] * n   # samples behind the current statistics
        self._dirty = [False] * n
        self._mean = [prior] * n
        self._q: list[np.ndarray | None] = [None] * n
        self._since = 0
        self.seen = 0

    def bucket(self, prompt: int) -> int:
        return bisect.bisect_right(self.edges, prompt)

    def observe(self, prompt: int, output: int) -> None:
        """A request with ``prompt`` tokens finished after generating ``output`` tokens."""
        self.seen += 1
        for b in (self.bucket(prompt), len(self._count) - 1):
            self._hist[b, self._pos[b]] = output
            self._pos[b] = (self._pos[b] + 1) % self.window
            self._count[b] = min(self.window, self._count[b] + 1)
            self._dirty[b] = True
        self._since += 1
        if self._since >= self.refresh or self.seen <= self.min_count:
            self._since = 0
            self._recompute()

    def _recompute(self) -> None:
        pct = np.arange(101) / 100.0
        for b, n in enumerate(self._count):
            if self._dirty[b]:
                self._dirty[b] = False
                a = np.sort(self._hist[b, :n])
                self._ready[b] = n
                self._mean[b] = float(a.mean())
                self._q[b] = a[np.round(pct * (n - 1)).astype(int)]

    def _source(self, prompt: int) -> int | None:
        b = self.bucket(prompt)
        if self._ready[b] >= self.min_count:
            return b
        pooled = len(self._count) - 1
        return pooled if self._ready[pooled] > 0 else None

    def predict(self, prompt: int, cap: int) -> float:
        """Expected output tokens of a request (its mean under the history), at most ``cap``."""
        if self.oracle:
            return float(cap)
        b = self._source(prompt)
        m = self.prior if b is None else self._mean[b]
        return m if m < cap else float(cap)

    def quantile(self, prompt: int, cap: int, q: float) -> float:
        """The ``q``-th percentile (0-100) of the output length, at most ``cap``."""
        if self.oracle:
            return float(cap)
        b = self._source(prompt)
        qs = self._q[b] if b is not None else None
        v = self.prior if qs is None else float(qs[int(round(q))])
        return v if v < cap else float(cap)
