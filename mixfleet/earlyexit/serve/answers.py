"""Answering each request the moment its samples leave the network, not when its batch ends.

In a batch, samples that pass an early exit are done while others still
run the deeper stages. :class:`EarlyAnswers` is the ``on_exit`` hook of
:func:`~mixfleet.earlyexit.inference.run_exits`: when the last sample of a
request leaves (at whatever exit), the request's future is resolved on the
replica's event loop (``call_soon_threadsafe``: the batch runs in a worker
thread), so an early exit saves the request's latency even in a batch with
slow samples, and a drift-guard monitoring pass (``release`` mode) never
delays an answer.

Invariants: each request's future is resolved at most once, with one
prediction per sample of that request, in the request's order.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import torch


def _settle(fut: asyncio.Future, preds: list[dict]) -> None:
    if not fut.done():
        fut.set_result(preds)


class EarlyAnswers:
    """Per-request answers of one batch (``sizes[i]`` samples for request ``i``)."""

    def __init__(self, sizes: list[int], futures: list[asyncio.Future | None], arrivals: list[float],
                 exit_names: list[str], loop: asyncio.AbstractEventLoop):
        self.owner = np.repeat(np.arange(len(sizes)), sizes)
        self.first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        self.preds: list[list[dict | None]] = [[None] * n for n in sizes]
        self.pending = list(sizes)
        self.latency: list[float | None] = [None] * len(sizes)
        self.futures, self.arrivals, self.names, self.loop = futures, arrivals, exit_names, loop
        self.forced_exit: int | None = None  # set by the caller when the deadline forces an exit

    def on_exit(self, rows: torch.Tensor, logits: torch.Tensor, k: int) -> None:
        conf, labels = torch.softmax(logits.float(), dim=1).max(dim=1)
        now = time.monotonic()
        for r, label, c in zip(rows.tolist(), labels.tolist(), conf.tolist(), strict=True):
            i = int(self.owner[r])
            self.preds[i][r - self.first[i]] = {"label": label, "confidence": c, "exit": k,
                                                "exit_name": self.names[k], "forced": self.forced_exit == k}
            self.pending[i] -= 1
            if self.pending[i] == 0:
                self.latency[i] = now - self.arrivals[i]
                if self.futures[i] is not None:
                    self.loop.call_soon_threadsafe(_settle, self.futures[i], self.preds[i])

    def finish(self, labels: list[int], confidence: list[float], exits: list[int]) -> list[list[dict]]:
        """Fill what ``on_exit`` never saw (the plain backbone) and return every request's predictions."""
        now = time.monotonic()
        for i, preds in enumerate(self.preds):
            for j, p in enumerate(preds):
                if p is None:
                    r = int(self.first[i]) + j
                    preds[j] = {"label": labels[r], "confidence": confidence[r], "exit": exits[r],
                                "exit_name": self.names[exits[r]], "forced": False}
            if self.latency[i] is None:
                self.latency[i] = now - self.arrivals[i]
        return self.preds  # type: ignore[return-value]
