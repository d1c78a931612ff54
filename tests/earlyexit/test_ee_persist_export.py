"""Save/load round trips, per-stage export (torch.export and TorchScript), committed weights."""

import numpy as np
import pytest
import torch

from mixfleet.earlyexit.export import ExportedEarlyExit, export_model
from mixfleet.earlyexit.persist import default_model_path, load, save
from mixfleet.errors import InputError


def test_save_load_round_trip(digits_model, digits, mixed_thresholds, tmp_path):
    digits_model.set_thresholds(mixed_thresholds)
    path = save(digits_model, tmp_path / "m.pt", calibration={"eps": 0.01})
    back = load(path)
    x = torch.as_tensor(digits.test.x)
    a, b = digits_model.predict(x), back.predict(x)
    assert torch.equal(a.exit_index, b.exit_index) and torch.allclose(a.logits, b.logits)
    assert back.thresholds == mixed_thresholds and back.calibration == {"eps": 0.01}
    assert torch.load(path, weights_only=True)["config"]["exits"] == ["layer1", "layer2"]


def test_loading_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a saved early-exit model"):
        load(junk)


@pytest.mark.parametrize("method", ["export", "torchscript"])
def test_exported_stages_keep_the_exits(digits_model, digits, mixed_thresholds, tmp_path, method):
    digits_model.set_thresholds(mixed_thresholds)
    export_model(digits_model, tmp_path, method=method)
    exported = ExportedEarlyExit(tmp_path)
    for n in (1, 5, 97):  # the batch dimension stays dynamic
        x = torch.as_tensor(digits.test.x[:n])
        a, b = digits_model.predict(x), exported.predict(x)
        assert torch.equal(a.exit_index, b.exit_index)
        assert torch.allclose(a.logits, b.logits, atol=1e-4)
    assert len(set(exported.predict(digits.test.x).exit_index.tolist())) == 3  # all exits in use
    with pytest.raises(InputError, match="NaN"):
        exported.predict(torch.full((1, 1, 8, 8), float("nan")))


def test_unknown_export_method(digits_model, tmp_path):
    with pytest.raises(InputError, match="valid export methods: export, torchscript"):
        export_model(digits_model, tmp_path, method="onnx")


def test_committed_weights_are_small_and_accurate():
    from mixfleet.earlyexit.data import load_dataset

    path = default_model_path()
    assert path.stat().st_size < 2 * 1024 * 1024
    model = load(path)
    test = load_dataset("mnist", seed=0).test
    with torch.no_grad():
        pred = torch.cat([model(torch.as_tensor(test.x[s:s + 250])) for s in range(0, len(test), 250)]).argmax(1)
    assert (pred.numpy() == test.y).mean() >= 0.97
    assert model.calibration["eps"] == 0.01 and model.thresholds == model.calibration["thresholds"]
    assert np.isclose(sum(model.calibration["exit_rates"]), 1.0)
