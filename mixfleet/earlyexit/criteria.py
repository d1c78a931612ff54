"""Exit criteria: when is an exit's answer good enough to stop?

Every criterion turns an exit's logits into a confidence score in ``[0, 1]``
per sample; a sample leaves at exit ``k`` when ``score >= threshold[k]``.
So a threshold of 1.0 (almost) never exits and 0.0 always exits, for every
criterion, and calibration can treat them alike.

- ``max_softmax``: the top class probability (BranchyNet/SDN style).
- ``entropy``: ``1 - H(p) / log(C)``, one minus the normalised entropy (DeeBERT).
- ``patience``: PABEE-style agreement: the minimum top probability over the
  last ``patience`` exits if they all predict the same class. Until then
  the score is -1, so such a sample never leaves, whatever the threshold.

Criteria that need history (patience) keep a per-sample ``state`` dict of
tensors with the batch on dim 0; the inference loop compacts it together with
the activations, so state rows always line up with the active samples.
"""

from __future__ import annotations

import math

import torch

from mixfleet.errors import InputError, unknown_name


class Criterion:
    """Base: ``score(logits, state) -> (scores [B], state)``."""

    name = "base"

    def score(self, logits: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name}


class MaxSoftmax(Criterion):
    name = "max_softmax"

    def score(self, logits, state):
        return torch.softmax(logits.float(), dim=1).amax(dim=1), state


class Entropy(Criterion):
    name = "entropy"

    def score(self, logits, state):
        logp = torch.log_softmax(logits.float(), dim=1)
        h = -(logp.exp() * logp).sum(dim=1)
        return (1.0 - h / math.log(logits.shape[1])).clamp(0.0, 1.0), state


class Patience(Criterion):
    name = "patience"

    def __init__(self, patience: int = 2):
        if int(patience) < 1:
            raise InputError(f"patience must be >= 1, got {patience}", "use patience=2 (two agreeing exits)")
        self.patience = int(patience)

    def config(self) -> dict:
        return {"name": self.name, "patience": self.patience}

    def score(self, logits, state):
        prob = torch.softmax(logits.float(), dim=1)
        conf, label = prob.max(dim=1)
        if "label" in state:
            same = label == state["label"]
            run = torch.where(same, state["run"] + 1, torch.ones_like(state["run"]))
            low = torch.where(same, torch.minimum(conf, state["low"]), conf)
        else:
            run, low = torch.ones_like(label), conf
        state = {"label": label, "run": run, "low": low}
        return torch.where(run >= self.patience, low, torch.full_like(low, -1.0)), state


CRITERIA: dict[str, type[Criterion]] = {"max_softmax": MaxSoftmax, "entropy": Entropy, "patience": Patience}


def get_criterion(spec: str | dict | Criterion) -> Criterion:
    """A criterion from its name, ``{"name": ..., **options}`` or an instance."""
    if isinstance(spec, Criterion):
        return spec
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = str(spec.pop("name", "")).lower().replace("-", "_")
    if name not in CRITERIA:
        raise unknown_name("exit criterion", name, CRITERIA)
    try:
        return CRITERIA[name](**spec)
    except TypeError as exc:
        raise InputError(f"bad options for exit criterion '{name}': {exc}", "see mixfleet.earlyexit.criteria") from None
