"""Image processing with numpy: a chain whose payloads are arrays (~100 KB and more)."""

from __future__ import annotations

import numpy as np


def load(p):
    n = int(p.get("size", 128))
    y, x = np.mgrid[0:n, 0:n]
    square = ((abs(x - n / 2) < n / 4) & (abs(y - n / 2) < n / 4)).astype(np.float32)
    rgb = np.stack([square * 200, square * 100 + 20, np.full_like(square, 30)], axis=-1)
    return rgb.astype(np.float32)


def grayscale(img):
    return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def blur(img):
    padded = np.pad(img, 1, mode="edge")
    return sum(padded[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)) / 9.0


def edges(img):
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    gx[:, 1:-1] = img[:, 2:] - img[:, :-2]
    gy[1:-1, :] = img[2:, :] - img[:-2, :]
    return np.hypot(gx, gy).astype(np.float32)


def threshold(img):
    return img > (img.max() / 2)


def stats(mask):
    ys, xs = np.nonzero(mask)
    return {"edge_pixels": int(mask.sum()), "bbox": [int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())]}
