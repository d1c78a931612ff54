"""Save and load early-exit models: state dict + config in one ``.pt`` file.

The file holds plain tensors and JSON-like values only, so it loads with
``torch.load(weights_only=True)``. Built-in architectures (the registry
:data:`ARCHITECTURES`) are rebuilt from their name; a model made from a
user's own backbone is rebuilt by passing that (untrained) backbone to
:func:`load`, which re-attaches the exits and loads the weights.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from mixfleet.earlyexit.attach import attach_exits
from mixfleet.earlyexit.resnet import digits_resnet, mnist64_resnet, mnist_resnet, resnet18
from mixfleet.errors import InputError, first_line, unknown_name
from mixfleet.platform.output import atomic_write_bytes

FORMAT = "mixfleet.earlyexit/1"
ARCHITECTURES = {"mnist_resnet": mnist_resnet, "mnist64_resnet": mnist64_resnet, "digits_resnet": digits_resnet, "resnet18": resnet18}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_model_path() -> Path:
    """The committed MNIST-5k model (trained and calibrated; see docs/earlyexit.md)."""
    return WEIGHTS_DIR / "mnist_resnet.pt"


def serving_model_path() -> Path:
    """The committed 64x64 serving model (``mnist64_resnet``): real CPU cost per request that dominates
    Serve's own, the default of ``earlyexit serve`` and ``bench-sla`` (see docs/earlyexit.md)."""
    return WEIGHTS_DIR / "mnist64_resnet.pt"


def build_model(arch: str, exits=("layer1", "layer2"), input_shape=(1, 28, 28), head="pool_linear",
                criterion="max_softmax", thresholds=None, **arch_kwargs):
    """A fresh early-exit model over a built-in architecture."""
    key = arch.lower()
    if key not in ARCHITECTURES:
        raise unknown_name("architecture", arch, ARCHITECTURES)
    model = attach_exits(ARCHITECTURES[key](**arch_kwargs), after=list(exits), input_shape=input_shape, head=head,
                         criterion=criterion, thresholds=thresholds)
    model.arch = {"name": key, "kwargs": dict(arch_kwargs)}
    return model


def save(model, path: str | Path, calibration: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (config, weights, optional calibration) atomically to ``path``."""
    config = model.config()
    config["arch"] = getattr(model, "arch", None)
    payload = {"format": FORMAT, "config": config, "state_dict": model.state_dict(),
               "calibration": calibration, "extra": extra or {}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read(path: str | Path) -> dict:
    """The raw payload of a saved model (checked format)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file '{p}' does not exist", "train one with 'mixfleet earlyexit train' or omit --model")
    if p.stat().st_size == 0:
        raise InputError(f"model file '{p}' is empty", "pass a file written by 'mixfleet earlyexit train'")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"'{p}' is not a saved early-exit model ({type(exc).__name__}: {first_line(exc)[:100]})",
                         "pass a file written by 'mixfleet earlyexit train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"'{p}' is not a saved early-exit model (format {FORMAT} expected)",
                         "pass a file written by 'mixfleet earlyexit train'")
    return payload


def load(path: str | Path, backbone: torch.nn.Module | None = None):
    """Rebuild a saved model in eval mode; ``backbone`` is needed only for user architectures."""
    payload = read(path)
    cfg = payload["config"]
    common = {"input_shape": cfg["input_shape"], "head": cfg["head"], "criterion": cfg["criterion"],
              "thresholds": cfg["thresholds"]}
    if backbone is not None:
        model = attach_exits(backbone, after=cfg["exits"], **common)
    elif cfg.get("arch"):
        model = build_model(cfg["arch"]["name"], exits=cfg["exits"], **common, **cfg["arch"]["kwargs"])
    else:
        raise InputError(f"'{path}' holds a model over a user backbone", "pass that backbone: load(path, backbone=...)")
    model.load_state_dict(payload["state_dict"])
    model.calibration = payload.get("calibration")
    model.eval()
    return model
