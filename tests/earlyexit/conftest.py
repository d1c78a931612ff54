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


class InProcessResult:
    """What the ``cli`` fixture returns, for a command run in this process."""

    def __init__(self, code: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = code, stdout, stderr

    def json(self):
        import json

        return json.loads(self.stdout)

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("error: ")]
        return lines[-1] if lines else ""


@pytest.fixture
def cli_here(capfd):
    """Run ``mixfleet ARGS`` through the real entry point in this process.

    The same dispatcher, error handling and JSON-on-real-stdout path as the
    subprocess ``cli`` fixture, without paying torch's import per command
    (``test_ee_bad_input`` keeps a subprocess test for the process boundary).
    """
    from mixfleet.cli import main

    def run(*args) -> InProcessResult:
        capfd.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capfd.readouterr()
        return InProcessResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def mnist():
    """The bundled MNIST 5k, split as the serving model's training split it (seed 0)."""
    import torch

    from mixfleet.earlyexit.data import load_dataset

    torch.set_num_threads(1)
    return load_dataset("mnist", seed=0)
