"""Offline early-exit inference over a ray.data.Dataset in parallel tasks."""

import numpy as np
import torch

from mixfleet.earlyexit.batch import batch_predict, images_dataset
from mixfleet.earlyexit.flops import exit_costs


def test_batch_predict_matches_local_inference(ray_local, digits_model, digits, mixed_thresholds, tmp_path):
    from mixfleet.earlyexit.persist import save

    digits_model.set_thresholds(mixed_thresholds)
    path = save(digits_model, tmp_path / "m.pt")
    ds = images_dataset(digits.test.x, digits.test.y)
    out, report = batch_predict(ds, path, actors=2, batch_size=64, num_cpus=0.5)
    local = digits_model.predict(torch.as_tensor(digits.test.x))
    assert report.samples == len(digits.test)
    assert report.exit_counts == local.exit_counts()
    costs = exit_costs(digits_model)
    want = np.dot(local.exit_counts(), costs["exits"]) / len(digits.test) / costs["full"]
    assert abs(report.compute_saved - (1 - want)) < 1e-9 and report.compute_saved > 0
    assert abs(report.accuracy - (local.labels.numpy() == digits.test.y).mean()) < 1e-9
    assert set(out.schema().names) >= {"pred", "confidence", "exit_index", "flops", "target"}
