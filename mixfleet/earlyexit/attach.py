"""``attach_exits``: add exits to an existing, unmodified model.

The shim reads the model as the sequence of its top-level children (in
registration order) and cuts it after the named exit points. It can look
inside ``nn.Sequential``, ``nn.ModuleList`` and ``nn.TransformerEncoder``
containers (``"layer1.0"``, ``"encoder.layers.1"``), so a torchvision-style
ResNet (``after=["layer1", "layer2"]``) and a transformer encoder's layer
list both work. Like torchvision's ResNet, a top-level ``nn.Linear`` right
after a pooling layer gets an ``nn.Flatten(1)`` in front of it.

The cut is checked: on an example input, the chained stages must reproduce
the model's own ``forward``; if the forward does more than chain its
children, ``attach_exits`` says so instead of returning a wrong model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from mixfleet.earlyexit.model import EarlyExitModel
from mixfleet.errors import InputError, unknown_name

_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d)


def _children(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Children in execution order for the containers the shim understands."""
    if isinstance(module, nn.TransformerEncoder):
        kids = [(f"{prefix}layers.{i}", m) for i, m in enumerate(module.layers)]
        if module.norm is not None:
            kids.append((f"{prefix}norm", module.norm))
        return kids
    return [(prefix + n, m) for n, m in module.named_children()]


def _expandable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList, nn.TransformerEncoder))


def exit_points(model: nn.Module) -> list[str]:
    """Every name ``attach_exits`` accepts for ``model`` (all but the very last unit)."""
    names: list[str] = []

    def walk(mod: nn.Module, prefix: str) -> None:
        for name, child in _children(mod, prefix):
            names.append(name)
            if _expandable(child):
                walk(child, name + ".")

    walk(model, "")
    last = _units(model, "", [])[-1][0]
    return [n for n in names if n != last and not last.startswith(n + ".")]


def _units(module: nn.Module, prefix: str, targets: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Flatten ``module`` into (name, leaf-or-opaque module), opening containers an exit points into."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in _children(module, prefix):
        if _expandable(child) and any(t.startswith(name + ".") for t in targets):
            out.extend(_units(child, name + ".", targets))
        else:
            out.append((name, child))
    return out


def attach_exits(
    model: nn.Module,
    after: Sequence[str],
    input_shape: Sequence[int | None],
    head: str | dict = "pool_linear",
    criterion: str | dict = "max_softmax",
    thresholds=None,
    check: bool = True,
) -> EarlyExitModel:
    """An :class:`EarlyExitModel` sharing ``model``'s modules, with exits after ``after``.

    ``input_shape`` is one sample's shape (``None`` for a free dimension).
    The original model's parameters are shared, not copied.
    """
    valid = exit_points(model)
    for name in after:
        if name not in valid:
            raise unknown_name("exit point", str(name), valid)
    units = _units(model, "", list(after))
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    current: list[nn.Module] = []
    prev: nn.Module | None = None
    for name, mod in units:
        if isinstance(mod, nn.Linear) and isinstance(prev, _POOLS):
            current.append(nn.Flatten(1))
        current.append(mod)
        prev = mod
        if name in after:
            stages[name] = nn.Sequential(*current)
            current = []
    stages["final"] = nn.Sequential(*current)
    ee = EarlyExitModel(stages, exits=list(after), input_shape=input_shape, head=head, criterion=criterion,
                        thresholds=thresholds)
    if check:
        _check_same_forward(model, ee)
    return ee


@torch.no_grad()
def _check_same_forward(model: nn.Module, ee: EarlyExitModel) -> None:
    was = model.training
    model.eval()
    try:
        x = torch.rand(ee._example().shape, generator=torch.Generator().manual_seed(0))
        want, got = model(x), ee(x)
    finally:
        model.train(was)
    if not isinstance(want, torch.Tensor) or want.shape != got.shape or not torch.allclose(want, got, atol=1e-4,
                                                                                           rtol=1e-3):
        raise InputError(f"running the children of {type(model).__name__} in order does not reproduce its forward()",
                         "its forward does more than chain its children: build EarlyExitModel(stages=[...]) "
                         "from explicit stages instead")
