"""Early-exit models: add exits to a PyTorch model, train, calibrate, benchmark.

The user-facing nouns are :class:`EarlyExitModel` and :func:`attach_exits`;
everything else lives in private-by-convention modules. Names are resolved
lazily so that ``import mixfleet.earlyexit`` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EarlyExitModel": "mixfleet.earlyexit.model",
    "attach_exits": "mixfleet.earlyexit.attach",
    "ExitResult": "mixfleet.earlyexit.inference",
    "CRITERIA": "mixfleet.earlyexit.criteria",
    "train_joint": "mixfleet.earlyexit.training",
    "train_heads": "mixfleet.earlyexit.training",
    "calibrate": "mixfleet.earlyexit.calibration",
    "save": "mixfleet.earlyexit.persist",
    "load": "mixfleet.earlyexit.persist",
    "export_model": "mixfleet.earlyexit.export",
    "batch_predict": "mixfleet.earlyexit.batch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mixfleet.earlyexit' has no attribute '{name}'")
