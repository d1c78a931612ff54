"""FLOPs per stage and per exit, counted by torch's own ``FlopCounterMode``.

Counted ops are the ones torch's counter knows (convolutions, matmuls);
element-wise ops (BN, ReLU, adds) are left out, the usual convention. The
cost of answering at exit ``k`` is every stage up to that exit plus every
head evaluated on the way; the final exit in an early-exit pass also pays
for all heads, while the plain backbone pays for none.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def _count(fn, x) -> tuple[int, torch.Tensor]:
    with FlopCounterMode(display=False) as counter:
        out = fn(x)
    return int(counter.get_total_flops()), out


@torch.no_grad()
def exit_costs(model) -> dict:
    """Per-sample FLOPs: ``{"stages": [...], "heads": [...], "exits": [...], "full": int}``.

    ``exits[k]`` is the cost of a sample that leaves at exit ``k``; the last
    entry is a sample that runs to the final exit with every head evaluated.
    """
    was = model.training
    model.eval()
    try:
        h = model._example(batch=1)
        stage_flops, head_flops = [], []
        for i, stage in enumerate(model.stages):
            f, h = _count(stage, h)
            stage_flops.append(f)
            if str(i) in model.heads:
                head_flops.append(_count(model.heads[str(i)], h)[0])
    finally:
        model.train(was)
    exits, spent, k = [], 0, 0
    for i, f in enumerate(stage_flops):
        spent += f
        if str(i) in model.heads:
            spent += head_flops[k]
            k += 1
            exits.append(spent)
    exits.append(spent)
    return {"stages": stage_flops, "heads": head_flops, "exits": exits, "full": sum(stage_flops)}


def expected_flops(costs: dict, exit_counts) -> float:
    """Mean FLOPs per sample given how many samples left at each exit."""
    total = sum(exit_counts)
    return sum(c * n for c, n in zip(costs["exits"], exit_counts, strict=True)) / max(total, 1)
