"""Exits on a transformer encoder's layer list (``encoder.layers.1``, ``encoder.layers.3``).

The model reads each 8x8 digit as a sequence of 8 row tokens (real data,
offline), so the example needs no text corpus; the shim is the same for a
text encoder. ``attach_exits`` looks inside ``nn.TransformerEncoder``:

    python examples/earlyexit/transformer_exits.py
"""

import torch
from torch import nn

from mixfleet.earlyexit import attach_exits, train_joint
from mixfleet.earlyexit.data import load_dataset
from mixfleet.earlyexit.heads import TokenMean


class RowTransformer(nn.Module):
    """``[B, 8 rows, 8 pixels]`` -> logits; forward chains its children."""

    def __init__(self, dim: int = 32, layers: int = 4, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.pool = TokenMean()
        self.classifier = nn.Linear(dim, classes)

    def forward(self, x):
        return self.classifier(self.pool(self.encoder(self.embed(x))))


def main() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    rows = lambda x: x[:, 0]  # noqa: E731  [N, 1, 8, 8] -> [N, 8, 8]: 8 tokens of 8 features
    model = attach_exits(RowTransformer(), after=["encoder.layers.1", "encoder.layers.3"], input_shape=(8, 8))
    train_joint(model, rows(data.train.x), data.train.y, epochs=15, seed=0, augment_images=False)
    result = model.predict(rows(data.test.x), thresholds=[0.8, 0.8])
    accuracy = (result.labels.numpy() == data.test.y).mean()
    print(f"exits {model.exit_names}: counts {result.exit_counts()}, test accuracy {accuracy:.3f}")
    return {"accuracy": float(accuracy), "exit_counts": result.exit_counts()}


if __name__ == "__main__":
    main()
