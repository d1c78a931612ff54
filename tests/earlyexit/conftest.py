"""Shared early-exit fixtures: a small model trained on scikit-learn's digits (seconds)."""

import pytest


@pytest.fixture(scope="session")
def digits():
    import torch

    from mixfleet.earlyexit.data import load_dataset

    torch.set_num_threads(1)  # 2 shared cores: one thread per process avoids oversubscription
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digits_model(digits):
    """A digits ResNet with exits after layer1 and layer2, jointly trained (6 epochs)."""
    import torch

    from mixfleet.earlyexit.persist import build_model
    from mixfleet.earlyexit.training import train_joint

    torch.manual_seed(0)
    model = build_model("digits_resnet", input_shape=(1, 8, 8))
    train_joint(model, digits.train.x, digits.train.y, epochs=6, seed=0)
    return model


@pytest.fixture
def mixed_thresholds(digits_model, digits):
    """Thresholds at the median score of each exit, so samples leave at every exit."""
    import torch

    from mixfleet.earlyexit.training import exit_logits

    logits = exit_logits(digits_model, digits.test.x)
    return [float(torch.softmax(lg, 1).amax(1).median()) for lg in logits[:-1]]
