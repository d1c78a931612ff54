"""Timing a real engine's iterations where ``transformers`` runs the model, and reading the log.

Used by the profiler (:mod:`mixfleet.routing.profiler`: its burst and trickle phases) and by a
serving replica timing its own iterations under traffic
(:meth:`~mixfleet.routing.serve.torch_engine.TorchEngine.time_iterations`). An entry of the log is
``(start, seconds in the forward pass, query lengths, key lengths per sequence)``:
:func:`busy_steps` turns it into profile fit points, :func:`stalls` finds the waits where the engine
had work and ran nothing. Real compute: nothing here is emulated.
"""

from __future__ import annotations

import time


def model_runner(eng):
    """transformers' model runner of ``eng`` (whose ``compute_batch`` runs one iteration), or None."""
    deadline = time.monotonic() + 30  # the generation thread creates its batch processor when it starts
    while getattr(eng.manager, "batch_processor", None) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    runner = getattr(getattr(eng.manager, "batch_processor", None), "model_runner", None)
    return runner if runner is not None and hasattr(runner, "compute_batch") else None


class IterationTimer:
    """Times every iteration an engine runs while on: (start, seconds in the forward pass, query lengths,
    key lengths per sequence; the lengths None when the batch does not carry them), at most ``limit`` kept.

    It wraps ``transformers``' ``model_runner.compute_batch``, called by the engine's generation thread;
    a serving replica turns it on to time its own iterations under real traffic
    (:meth:`~mixfleet.routing.serve.torch_engine.TorchEngine.time_iterations`)."""

    def __init__(self, runner, limit: int = 100_000) -> None:
        from collections import deque

        self.runner, self.log = runner, deque(maxlen=limit)
        self._inner = None

    def start(self) -> None:
        if self._inner is not None:
            return
        inner = self._inner = self.runner.compute_batch
        log = self.log

        def timed(model, batch_data):
            t = time.perf_counter()
            out = inner(model, batch_data)
            d = time.perf_counter() - t
            q, k = batch_data.get("cu_seq_lens_q"), batch_data.get("cu_seq_lens_k")
            q, k = (next(iter(x.values())) if isinstance(x, dict) else x for x in (q, k))
            ql, kl = ((q[1:] - q[:-1]).tolist(), (k[1:] - k[:-1]).tolist()) if q is not None and k is not None \
                else (None, None)
            log.append((t, d, ql, kl))
            return out

        self.runner.compute_batch = timed

    def _unhook(self) -> None:
        if self._inner is not None:
            self.runner.compute_batch, self._inner = self._inner, None

    def stop(self) -> list[tuple]:
        """Unhook; the iterations timed so far (the log is emptied)."""
        self._unhook()
        out = list(self.log)
        self.log.clear()
        return out

    def __enter__(self) -> IterationTimer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._unhook()


def busy_steps(log: list[tuple], phase: str) -> list[dict]:
    """Fit points of the iterations in ``log`` the engine went straight on from (the next one started
    within 10 ms); one followed by a wait for work is not a point (its period would include the wait)."""
    return [step_point(phase, ql, kl, b[0] - t, d) for (t, d, ql, kl), b in zip(log, log[1:], strict=False)
            if ql is not None and b[0] - t - d < 0.010]


def stalls(log: list[tuple], gap_s: float = 0.010) -> dict:
    """Where the engine had work and did not run it: after an iteration, a wait of more than ``gap_s``
    before the next one although that next one continues a sequence already started (a decode, or a later
    chunk of a prompt: its keys outnumber its queries), so the sequence was in the engine all along. The
    generation loop runs straight on while it has sequences; such a wait is its thread not getting the
    interpreter or a core. ``{"count", "seconds", "longest_s", "at_s"}``; ``at_s`` lists the ten longest
    as ``[seconds after the first timed iteration, wait]``."""
    found = [(b[0] - log[0][0], b[0] - t - d) for (t, d, _, _), b in zip(log, log[1:], strict=False)
             if b[0] - t - d >= gap_s and b[2] is not None and any(k > q for q, k in zip(b[2], b[3], strict=True))]
    top = sorted(found, key=lambda x: -x[1])[:10]
    return {"count": len(found), "seconds": sum(w for _, w in found), "longest_s": top[0][1] if top else 0.0,
            "at_s": [[round(a, 3), round(w, 4)] for a, w in sorted(top)]}


def step_point(phase: str, ql: list[int], kl: list[int], time_s: float, forward_s: float) -> dict:
    """A timed iteration as a fit point: its tokens, the keys its decodes read, all keys it read, its prompt
    chunks' square term and query x key tokens; ``forward_s`` of its ``time_s`` in the forward pass (the
    rest is the generation loop's own Python: scheduling, sampling, handing out the tokens)."""
    pairs = list(zip(ql, kl, strict=True))
    return {"kind": "step", "phase": phase, "sequences": len(ql), "tokens": sum(ql),
            "kv": sum(b for a, b in pairs if a == 1), "keys": sum(kl),
            "sq": sum(b * b - (b - a) ** 2 for a, b in pairs if a > 1), "qkv": sum(ql) * sum(kl), "time_s": time_s,
            "forward_s": forward_s}
