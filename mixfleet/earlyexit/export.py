"""Export an early-exit model stage by stage, so the exits survive export.

Each stage and each exit head becomes its own program (``torch.export``
with a dynamic batch dimension, or TorchScript by tracing); a manifest
keeps the exit layout, criterion and thresholds. The early-exit loop itself
(:func:`run_exits`) stays in Python around the exported programs, which is
what lets a batch shrink between stages: a single exported graph could not
drop rows mid-way.

Layout of an export folder::

    manifest.json            {"method", "stages": [...], "heads": {stage: file}, "config": {...}}
    stage_<i>.pt2 | .pt      one program per stage
    head_<i>.pt2 | .pt       one program per exit head (i = stage index)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mixfleet.earlyexit.criteria import get_criterion
from mixfleet.earlyexit.inference import ExitResult, run_exits
from mixfleet.earlyexit.inputs import check_input, check_thresholds
from mixfleet.errors import InputError, unknown_name
from mixfleet.platform.output import atomic_write_text

METHODS = ("export", "torchscript")


def _save_program(module: torch.nn.Module, example: torch.Tensor, path: Path, method: str) -> None:
    if method == "export":
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        dims = {0: batch}
        prog = torch.export.export(module, (example,), dynamic_shapes=(dims,), strict=False)
        torch.export.save(prog, str(path))
    else:
        with torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False)
        traced.save(str(path))


@torch.no_grad()
def export_model(model, out_dir: str | Path, method: str = "export") -> Path:
    """Write every stage and head of ``model`` (eval mode) under ``out_dir``; returns the manifest path."""
    if method not in METHODS:
        raise unknown_name("export method", method, METHODS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    ext = ".pt2" if method == "export" else ".pt"
    h = model._example(batch=2)  # batch 2: a size-1 example would specialise the batch dimension
    stages, heads = [], {}
    for i, stage in enumerate(model.stages):
        name = f"stage_{i}{ext}"
        _save_program(stage, h, out / name, method)
        stages.append(name)
        h = stage(h)
        if str(i) in model.heads:
            hname = f"head_{i}{ext}"
            _save_program(model.heads[str(i)], h, out / hname, method)
            heads[str(i)] = hname
    manifest = {"method": method, "stages": stages, "heads": heads, "config": model.config()}
    return atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))


class ExportedEarlyExit:
    """Early-exit inference over exported programs (no model class needed)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        mpath = folder / "manifest.json"
        if not mpath.is_file():
            raise InputError(f"'{folder}' has no manifest.json", "export a model first with export_model()")
        m = json.loads(mpath.read_text())
        self.config = m["config"]
        self.input_shape = tuple(self.config["input_shape"])
        self.exit_names = self.config["exits"]
        self.criterion = get_criterion(self.config["criterion"])
        self.thresholds = check_thresholds(self.config["thresholds"], len(self.exit_names), self.exit_names)
        load = (lambda p: torch.export.load(str(p)).module()) if m["method"] == "export" else torch.jit.load
        self.stages = [load(folder / s) for s in m["stages"]]
        self.heads = {int(i): load(folder / f) for i, f in m["heads"].items()}

    @torch.no_grad()
    def predict(self, x, thresholds=None, mode: str = "stop") -> ExitResult:
        x = check_input(x, self.input_shape)
        th = self.thresholds if thresholds is None else check_thresholds(thresholds, len(self.exit_names),
                                                                         self.exit_names)
        return run_exits(x, self.stages, self.heads, th, self.criterion, mode=mode)
