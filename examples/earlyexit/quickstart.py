"""Add exits to an unmodified torchvision-style ResNet, train, calibrate, predict.

Runs in ~10 s on a laptop CPU with scikit-learn's 8x8 digits:

    python examples/earlyexit/quickstart.py
"""

import torch

from mixfleet.earlyexit import attach_exits, calibrate, train_joint
from mixfleet.earlyexit.data import load_dataset
from mixfleet.earlyexit.resnet import ResNet


def main() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    backbone = ResNet(layers=(1, 1, 1), widths=(8, 16, 32), num_classes=10, in_channels=1, small_stem=True)
    model = attach_exits(backbone, after=["layer1", "layer2"], input_shape=(1, 8, 8), head="pool_linear")
    train_joint(model, data.train.x, data.train.y, epochs=8, seed=0)
    cal = calibrate(model, data.calib.x, data.calib.y, eps=0.01)  # within 1 point of the full model
    result = model.predict(data.test.x)
    accuracy = (result.labels.numpy() == data.test.y).mean()
    full = (backbone(torch.as_tensor(data.test.x)).argmax(1).numpy() == data.test.y).mean()
    print(f"thresholds {[round(t, 3) for t in cal.thresholds]}; exits per head {result.exit_counts()}")
    print(f"test accuracy: early exit {accuracy:.3f}, full model {full:.3f}; "
          f"calibrated FLOPs {100 * cal.relative_flops:.0f}% of the full model")
    return {"accuracy": float(accuracy), "full_accuracy": float(full), "exit_counts": result.exit_counts()}


if __name__ == "__main__":
    main()
