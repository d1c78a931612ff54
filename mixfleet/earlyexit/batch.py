"""Offline early-exit inference over a ``ray.data.Dataset``.

``map_batches`` runs :class:`ExitPredictor` in at most ``actors`` parallel Ray
tasks: each Ray worker process loads the model once per call (from the saved
file's bytes, shipped with the tasks so it works on any node), keeps it, and
answers every batch with per-sample early exits. Tasks rather than an actor
pool: Ray Data's actor pool hands its actors their constructor state through
the object store, which Ray reports on the driver's stderr at every run. :func:`batch_predict` adds the columns ``pred``,
``confidence``, ``exit_index`` and ``flops`` and reports the exit-rate
histogram and the compute saved against the plain backbone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mixfleet.errors import InputError


class ExitPredictor:
    """A ``map_batches`` callable class: one model per actor, one early-exit pass per batch."""

    def __init__(self, model_bytes: bytes, column: str = "image", thresholds=None, num_threads: int = 1):
        import torch

        from mixfleet.earlyexit.flops import exit_costs
        from mixfleet.earlyexit.persist import load

        torch.set_num_threads(num_threads)
        path = Path(spill_model(model_bytes))
        try:
            self.model = load(path)
        finally:
            path.unlink(missing_ok=True)
        if thresholds is not None:
            self.model.set_thresholds(thresholds)
        self.column = column
        self.costs = np.asarray(exit_costs(self.model)["exits"], dtype=np.int64)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise InputError(f"batch has no column '{self.column}'", f"columns: {', '.join(batch)}")
        r = self.model.predict(np.asarray(batch[self.column], dtype=np.float32))
        out = {k: v for k, v in batch.items() if k != self.column}
        ex = r.exit_index.numpy()
        out.update(pred=r.labels.numpy(), confidence=r.confidence.numpy(), exit_index=ex, flops=self.costs[ex])
        return out


_LOADED: dict[str, ExitPredictor] = {}  # in a Ray worker process: the model of the current batch_predict call


def _predict_batch(batch: dict[str, np.ndarray], *, call: str, model_bytes: bytes, column: str,
                   thresholds) -> dict[str, np.ndarray]:
    """One ``map_batches`` task: the :class:`ExitPredictor` this worker loaded for ``call`` (loaded on first use)."""
    predictor = _LOADED.get(call)
    if predictor is None:
        _LOADED.clear()  # one model per worker process at a time
        predictor = _LOADED[call] = ExitPredictor(model_bytes, column, thresholds)
    return predictor(batch)


def spill_model(data: bytes) -> str:
    """Write a model's bytes to a temporary ``.pt`` file (in a Ray worker) and return its path."""
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".pt")
    with open(fd, "wb") as f:
        f.write(data)
    return name


def images_dataset(x: np.ndarray, y: np.ndarray | None = None, column: str = "image"):
    """A Ray dataset with a tensor column of images (and ``target`` labels if given)."""
    import pyarrow as pa
    import ray
    from ray.data.extensions import ArrowTensorArray

    cols = {column: ArrowTensorArray.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}
    if y is not None:
        cols["target"] = pa.array(np.asarray(y, dtype=np.int64))
    return ray.data.from_arrow(pa.table(cols))


@dataclass
class BatchReport:
    samples: int
    exit_names: list[str]
    exit_counts: list[int]  # per exit, final last
    exit_rates: list[float]
    relative_flops: float  # mean FLOPs / backbone FLOPs
    compute_saved: float  # 1 - relative_flops
    accuracy: float | None  # when the dataset has a ``target`` column

    def to_dict(self) -> dict:
        return asdict(self)


def batch_predict(ds, model_path: str | Path | None = None, *, column: str = "image", thresholds=None,
                  actors: int = 2, batch_size: int = 128, num_cpus: float = 1.0):
    """Early-exit predictions for every row of ``ds`` on ``actors`` parallel workers;
    returns ``(result_dataset, BatchReport)``."""
    import uuid

    from mixfleet.earlyexit.flops import exit_costs
    from mixfleet.earlyexit.persist import default_model_path, load

    path = Path(model_path or default_model_path())
    model = load(path)  # validates the file before any actor starts
    if thresholds is not None:
        model.set_thresholds(thresholds)
    if actors < 1 or batch_size < 1:
        raise InputError(f"actors={actors} and batch_size={batch_size} must be >= 1", "use e.g. actors=2")
    out = ds.map_batches(
        _predict_batch,
        fn_kwargs={"call": uuid.uuid4().hex, "model_bytes": path.read_bytes(), "column": column,
                   "thresholds": thresholds},
        concurrency=actors,
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus,
    ).materialize()
    cols = ["exit_index", "pred"] + (["target"] if "target" in out.schema().names else [])
    data = {c: np.concatenate([b[c] for b in out.select_columns(cols).iter_batches(batch_format="numpy")])
            for c in cols}
    counts = np.bincount(data["exit_index"], minlength=model.n_exits + 1)
    costs = exit_costs(model)
    rel = float(counts @ np.asarray(costs["exits"], dtype=np.float64) / counts.sum() / costs["full"])
    acc = float((data["pred"] == data["target"]).mean()) if "target" in data else None
    report = BatchReport(int(counts.sum()), model.exit_names + ["final"], counts.tolist(),
                         (counts / counts.sum()).tolist(), rel, 1.0 - rel, acc)
    return out, report


def model_bytes(model, calibration: dict | None = None) -> bytes:
    """Serialise an in-memory model as :class:`ExitPredictor` expects (the saved-file format)."""
    import tempfile

    from mixfleet.earlyexit.persist import save

    with tempfile.TemporaryDirectory() as tmp:
        p = save(model, Path(tmp) / "m.pt", calibration=calibration)
        return p.read_bytes()


__all__ = ["ExitPredictor", "BatchReport", "batch_predict", "images_dataset", "model_bytes"]
