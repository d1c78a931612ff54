"""attach_exits on unmodified models: torchvision-style ResNet, transformer layer list."""

import importlib.util

import pytest
import torch
from torch import nn

from mixfleet.earlyexit import attach_exits
from mixfleet.earlyexit.attach import exit_points
from mixfleet.earlyexit.resnet import resnet18
from mixfleet.errors import InputError


def _load_example(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"ee_example_{name}", repo_root / "examples" / "earlyexit" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resnet18_gets_exits_without_changes_and_keeps_its_output():
    torch.manual_seed(0)
    net = resnet18(num_classes=7).eval()
    ee = attach_exits(net, after=["layer1", "layer2"], input_shape=(3, 64, 64))
    x = torch.rand(3, 3, 64, 64)
    assert torch.allclose(ee(x), net(x), atol=1e-5)
    outs = ee.forward_all(x)
    assert [tuple(o.shape) for o in outs] == [(3, 7)] * 3
    assert ee.stage_names == ["layer1", "layer2", "final"]
    # parameters are shared with the user's model, not copied
    with torch.no_grad():
        net.fc.bias.add_(1.0)
    assert torch.allclose(ee(x), net(x), atol=1e-5)


def test_exit_inside_a_residual_stage_and_conv_head():
    net = resnet18(num_classes=5).eval()
    ee = attach_exits(net, after=["layer2.0"], input_shape=(3, 32, 32), head={"name": "conv", "width": 16})
    assert ee.exit_names == ["layer2.0"]
    assert ee.predict(torch.rand(2, 3, 32, 32), thresholds=[0.0]).exit_counts() == [2, 0]


def test_unknown_exit_point_lists_the_valid_names():
    net = resnet18(num_classes=5)
    with pytest.raises(InputError) as err:
        attach_exits(net, after=["layer5"], input_shape=(3, 32, 32))
    text = str(err.value)
    assert "unknown exit point 'layer5'" in text and "layer4" in text and "layer1.0" in text
    assert "fc" not in exit_points(net)  # the last unit is the final exit itself


def test_transformer_encoder_layer_list(repo_root):
    mod = _load_example(repo_root, "transformer_exits.py")
    torch.manual_seed(0)
    net = mod.RowTransformer().eval()
    ee = attach_exits(net, after=["encoder.layers.1", "encoder.layers.3"], input_shape=(8, 8))
    x = torch.rand(4, 8, 8)
    assert torch.allclose(ee(x), net(x), atol=1e-5)
    assert "encoder.layers.2" in exit_points(net)
    assert ee.predict(x, thresholds=[0.0, 0.0]).exit_counts() == [4, 0, 0]


class NotAChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)  # a skip connection the children order cannot express


def test_a_forward_that_is_not_a_chain_is_refused():
    with pytest.raises(InputError, match="does not reproduce its forward"):
        attach_exits(NotAChain(), after=["a"], input_shape=(4,))


def test_unknown_head_lists_valid_heads():
    with pytest.raises(InputError, match="valid exit heads: conv, pool_linear"):
        attach_exits(resnet18(num_classes=3), after=["layer1"], input_shape=(3, 32, 32), head="mlp")
