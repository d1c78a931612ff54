"""The drifting input stream of the SLA benchmark (pure, no Ray): clean at the ends, hardest mid-run."""

import numpy as np


def test_drift_rises_to_mid_run_then_falls_back_and_hurts_a_model():
    import torch

    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.persist import default_model_path, load
    from mixfleet.earlyexit.serve.drift import drift_images, level_at

    assert level_at(np.array([0.0, 75.0, 150.0]), 150.0).tolist() == [0.0, 1.0, 0.0]
    test = load_dataset("mnist", seed=0).test
    x, y = test.x[:200, 0], test.y[:200]
    rng = np.random.default_rng(0)
    assert np.allclose(drift_images(x, 0.0, rng), x, atol=1e-5)  # level 0: the clean digits
    hard = drift_images(x, 1.0, rng)
    assert hard.shape == x.shape and hard.min() >= 0 and hard.max() <= 1
    model = load(default_model_path())
    torch.set_num_threads(1)
    acc = lambda imgs: float((model(torch.as_tensor(imgs)[:, None]).argmax(1).numpy() == y).mean())  # noqa: E731
    assert acc(hard) < acc(x) - 0.2  # the stream really drifts away from what the model learnt
