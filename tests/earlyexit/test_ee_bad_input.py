"""Every bad-input case of the issue ends as a clear InputError (API) or one error line (CLI)."""

import numpy as np
import pytest
import torch

from mixfleet.earlyexit.persist import build_model
from mixfleet.errors import InputError


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("digits_resnet", input_shape=(1, 8, 8)).eval()


@pytest.mark.parametrize("shape", [(2, 1, 8, 9), (2, 8, 8), (1, 1, 1, 8, 8), (3, 1, 28, 28)])
def test_wrong_shape(model, shape):
    with pytest.raises(InputError, match=r"expected \(B, 1, 8, 8\)") as err:
        model.predict(torch.rand(*shape))
    assert str(tuple(shape)) in str(err.value)


def test_single_sample_without_batch_dim_is_accepted(model):
    assert model.predict(torch.rand(1, 8, 8)).logits.shape == (1, 10)


@pytest.mark.parametrize("x", [torch.ones(2, 1, 8, 8, dtype=torch.int64), np.ones((2, 1, 8, 8), dtype=np.uint8),
                               torch.ones(2, 1, 8, 8, dtype=torch.bool), np.array([["a"] * 8] * 8, dtype=object)])
def test_wrong_dtype(model, x):
    with pytest.raises(InputError, match="dtype"):
        model.predict(x)


def test_not_an_array(model):
    with pytest.raises(InputError, match="expected a float tensor or numpy array"):
        model.predict([[0.0] * 8] * 8)


def test_empty_batch(model):
    with pytest.raises(InputError, match="empty"):
        model.predict(torch.rand(0, 1, 8, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf(model, bad):
    x = torch.rand(3, 1, 8, 8)
    x[1, 0, 2, 2] = bad
    with pytest.raises(InputError, match="1 NaN or Inf value"):
        model.predict(x)


@pytest.mark.parametrize("th", [[1.5, 0.5], [0.5, -0.1], [float("nan"), 0.5], 2.0])
def test_thresholds_outside_unit_interval(model, th):
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        model.predict(torch.rand(1, 1, 8, 8), thresholds=th)
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        model.set_thresholds(th)


def test_wrong_number_of_thresholds_names_the_exits(model):
    with pytest.raises(InputError, match=r"got 3 threshold\(s\) for 2 exit\(s\) \(layer1, layer2\)"):
        model.predict(torch.rand(1, 1, 8, 8), thresholds=[0.5, 0.5, 0.5])


def test_unknown_exit_point_lists_valid_names():
    with pytest.raises(InputError, match="unknown exit point 'layer9'.*valid exit points: .*layer1.*layer3"):
        build_model("digits_resnet", exits=["layer9"], input_shape=(1, 8, 8))


def test_cli_bad_thresholds(cli):  # a real subprocess: one error line, non-zero exit, empty stdout
    r = cli("earlyexit", "bench", "--thresholds", "1.5,0.9", "--limit", "10", "--repeats", "1", "--json")
    assert r.returncode != 0 and r.stdout == ""
    assert "threshold 1.5 for layer1 is outside [0, 1]" in r.error_line


def test_cli_unknown_exit_point(cli_here, tmp_path):
    r = cli_here("earlyexit", "train", "--dataset", "digits", "--exits", "layer1,layerX", "--epochs", "1",
                 "--out", tmp_path / "m.pt")
    assert r.returncode != 0
    assert "unknown exit point 'layerX'" in r.error_line and "layer2" in r.error_line
    assert not (tmp_path / "m.pt").exists()


def test_cli_missing_model_and_unknown_dataset(cli_here, tmp_path):
    r = cli_here("earlyexit", "bench", "--model", tmp_path / "nope.pt")
    assert r.returncode != 0 and "nope.pt' does not exist" in r.error_line
    r = cli_here("earlyexit", "train", "--dataset", "cifar", "--out", tmp_path / "m.pt")
    assert r.returncode != 0 and "unknown dataset 'cifar'" in r.error_line and "mnist" in r.error_line
