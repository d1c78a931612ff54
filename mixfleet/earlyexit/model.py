"""``EarlyExitModel``: a backbone cut into ordered stages, with exit heads between them.

The backbone is given as ordered stages (an ``nn.Sequential``, a list of
blocks, or a name -> module mapping); the last stage must end in the
backbone's own classifier, so ``forward(x)`` is exactly the original model.
Exit ``k`` sits after the stage named ``exits[k]``. Heads are sized by
probing the stages once with a zero input of ``input_shape``.

Invariants: stages are run in the given order; exits are in stage order;
thresholds has one value in ``[0, 1]`` per exit; the model never sees
unchecked user input in :meth:`predict`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mixfleet.earlyexit.criteria import get_criterion
from mixfleet.earlyexit.heads import build_head
from mixfleet.earlyexit.inference import ExitResult, run_exits
from mixfleet.earlyexit.inputs import check_input, check_thresholds
from mixfleet.errors import InputError, unknown_name


def _named_stages(stages) -> OrderedDict:
    if isinstance(stages, nn.Sequential):
        return OrderedDict(stages.named_children())
    if isinstance(stages, Mapping):
        return OrderedDict((str(k), v) for k, v in stages.items())
    if isinstance(stages, (list, tuple, nn.ModuleList)):
        return OrderedDict((str(i), m) for i, m in enumerate(stages))
    raise InputError(f"stages of type {type(stages).__name__} are not supported",
                     "pass an nn.Sequential, a list of modules or a {name: module} mapping, or use attach_exits()")


class EarlyExitModel(nn.Module):
    """A backbone with exit heads after some of its stages."""

    def __init__(
        self,
        stages,
        exits: Sequence[str],
        input_shape: Sequence[int | None],
        num_classes: int | None = None,
        head: str | dict = "pool_linear",
        criterion: str | dict = "max_softmax",
        thresholds: Sequence[float] | float | None = None,
    ):
        super().__init__()
        named = _named_stages(stages)
        if len(named) < 2:
            raise InputError(f"an early-exit model needs at least 2 stages, got {len(named)}",
                             "cut the backbone into more stages")
        names = list(named)
        valid = names[:-1]  # an exit after the last stage would be the final exit itself
        exits = [str(e) for e in exits]
        for e in exits:
            if e not in valid:
                raise unknown_name("exit point", e, valid)
        if len(set(exits)) != len(exits) or not exits:
            raise InputError(f"exit points {exits} must be distinct and non-empty", f"choose among: {', '.join(valid)}")
        exits = sorted(exits, key=names.index)
        self.stage_names = names
        self.exit_names = exits
        self.input_shape = tuple(None if d is None else int(d) for d in input_shape)
        self.head_spec = head
        self.stages = nn.ModuleList(named.values())
        shapes = self._probe_shapes()
        final = shapes[-1]
        if len(final) != 1:
            raise InputError(f"the last stage outputs per-sample shape {final}, not logits",
                             "the last stage must end in the backbone's classifier")
        self.num_classes = int(num_classes or final[0])
        self.heads = nn.ModuleDict({
            str(names.index(e)): build_head(head, shapes[names.index(e)], self.num_classes) for e in exits})
        self.criterion = get_criterion(criterion)
        self.thresholds = check_thresholds(0.9 if thresholds is None else thresholds, len(exits), exits)

    # -- structure -------------------------------------------------------------------------
    @property
    def n_exits(self) -> int:
        return len(self.exit_names)

    def exit_stage_indices(self) -> list[int]:
        return [self.stage_names.index(e) for e in self.exit_names]

    def _example(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros((batch, *[8 if d is None else d for d in self.input_shape]))

    @torch.no_grad()
    def _probe_shapes(self) -> list[tuple[int, ...]]:
        was = self.training
        self.eval()
        h, shapes = self._example(), []
        try:
            for stage in self.stages:
                h = stage(h)
                shapes.append(tuple(h.shape[1:]))
        except RuntimeError as exc:
            raise InputError(f"the stages do not accept inputs of shape {tuple(self._example().shape)}: "
                             f"{str(exc).splitlines()[0]}", "check input_shape (per sample, no batch dim)") from None
        finally:
            self.train(was)
        return shapes

    def config(self) -> dict:
        return {"stage_names": self.stage_names, "exits": self.exit_names, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "head": self.head_spec, "criterion": self.criterion.config(),
                "thresholds": list(self.thresholds)}

    # -- passes ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plain backbone: final logits, no heads run."""
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit then the final one (training, calibration)."""
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if str(i) in self.heads:
                out.append(self.heads[str(i)](x))
        out.append(x)
        return out

    def set_thresholds(self, thresholds) -> None:
        self.thresholds = check_thresholds(thresholds, self.n_exits, self.exit_names)

    @torch.no_grad()
    def predict(self, x, thresholds=None, criterion=None, mode: str = "stop", on_exit=None,
                force_exit=None) -> ExitResult:
        """Early-exit inference on a checked batch (see :func:`run_exits`)."""
        x = check_input(x, self.input_shape)
        th = self.thresholds if thresholds is None else check_thresholds(thresholds, self.n_exits, self.exit_names)
        crit = self.criterion if criterion is None else get_criterion(criterion)
        heads = {int(k): h for k, h in self.heads.items()}
        if not self.training:  # the common case: no mode switch (walking every module costs ~0.1 ms)
            return run_exits(x, list(self.stages), heads, th, crit, mode=mode, on_exit=on_exit,
                             force_exit=force_exit)
        self.eval()  # batch-norm statistics must not move at inference
        try:
            return run_exits(x, list(self.stages), heads, th, crit, mode=mode, on_exit=on_exit,
                             force_exit=force_exit)
        finally:
            self.train()
