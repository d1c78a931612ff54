"""The early-exit inference loop, over plain callables.

One loop serves the eager :class:`EarlyExitModel` and exported stage
programs alike (exits survive export because the loop is not inside the
exported graph). Samples leave a batch independently:

- ``stop`` mode: after each exit, samples whose score passes the threshold
  are answered and *removed*: the activations (and criterion state) are
  compacted with a boolean mask, so later stages run on fewer rows.
- ``release`` mode: answers are recorded (and ``on_exit`` fires) as early,
  but every sample runs to the end, which yields the final exit's labels for
  monitoring (agreement between early answers and the full model).

Invariants: ``active[j]`` is the original batch row of activation row ``j``;
each sample is answered exactly once; ``exit_index == n_exits`` means the
final exit (the backbone's own output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mixfleet.errors import unknown_name

MODES = ("stop", "release")


@dataclass
class ExitResult:
    """What an early-exit pass returns for a batch of B samples."""

    logits: torch.Tensor  # [B, C] logits of the exit that answered
    exit_index: torch.Tensor  # [B] long, 0..n_exits (n_exits = final exit)
    n_exits: int
    final_logits: torch.Tensor | None = None  # [B, C], release mode only

    @property
    def labels(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    @property
    def confidence(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=1).amax(dim=1)

    def exit_counts(self) -> list[int]:
        """Samples answered per exit, final exit last."""
        return torch.bincount(self.exit_index, minlength=self.n_exits + 1).tolist()

    def agreement(self) -> float | None:
        """Share of samples whose early answer equals the final exit's (release mode)."""
        if self.final_logits is None:
            return None
        return (self.labels == self.final_logits.argmax(dim=1)).float().mean().item()


OnExit = Callable[[torch.Tensor, torch.Tensor, int], None]


def run_exits(
    x: torch.Tensor,
    stages: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    heads: dict[int, Callable[[torch.Tensor], torch.Tensor]],
    thresholds: Sequence[float],
    criterion,
    mode: str = "stop",
    on_exit: OnExit | None = None,
    force_exit: Callable[[int], bool] | None = None,
) -> ExitResult:
    """Run ``x [B, ...]`` through ``stages`` with exit ``k`` = ``heads[stage_index]``.

    ``heads`` maps a stage index to its exit head, in stage order; exit ``k``
    is the ``k``-th of them. ``force_exit(k)``, when given and true, makes
    every remaining sample leave at exit ``k`` (deadline-forced exits).
    """
    if mode not in MODES:
        raise unknown_name("exit mode", mode, MODES)
    order = sorted(heads)
    exit_of = {s: k for k, s in enumerate(order)}
    n_exits = len(order)
    b = x.shape[0]
    active = torch.arange(b)
    answered = torch.zeros(b, dtype=torch.bool)
    exit_index = torch.full((b,), n_exits, dtype=torch.long)
    answer: torch.Tensor | None = None
    state: dict = {}
    h = x
    last = len(stages) - 1
    for i, stage in enumerate(stages):
        h = stage(h)
        k = exit_of.get(i)
        if k is None or i == last:
            continue
        logits = heads[i](h)  # [n_active, C]
        if answer is None:
            answer = logits.new_empty((b, logits.shape[1]))
        score, state = criterion.score(logits, state)
        t = thresholds[k]
        done = score >= t if t < 1.0 else torch.zeros_like(score, dtype=torch.bool)
        if force_exit is not None and force_exit(k):
            done = torch.ones_like(done)
        if mode == "release":
            done = done & ~answered[active]
        elif len(active) == b:  # stop mode, nobody has left yet
            n_done = int(done.sum())
            if n_done == b:  # fast path (e.g. batch 1): the whole batch leaves here, no scatter needed
                exit_index.fill_(k)
                if on_exit is not None:
                    on_exit(active, logits, k)
                return ExitResult(logits, exit_index, n_exits)
            if n_done == 0:
                continue
        if bool(done.any()):
            rows = active[done]
            answer[rows] = logits[done]
            exit_index[rows] = k
            answered[rows] = True
            if on_exit is not None:
                on_exit(rows, logits[done], k)
            if mode == "stop":
                keep = ~done
                if not bool(keep.any()):
                    return ExitResult(answer, exit_index, n_exits)
                active, h = active[keep], h[keep]
                state = {name: v[keep] for name, v in state.items()}
    final = h  # [n_active, C]: the last stage ends in the backbone's classifier
    if answer is None:
        answer = final.new_empty((b, final.shape[1]))
    rest = ~answered[active]
    rows = active[rest]
    answer[rows] = final[rest]
    if on_exit is not None and rows.numel():
        on_exit(rows, final[rest], n_exits)
    return ExitResult(answer, exit_index, n_exits, final_logits=final if mode == "release" else None)
