"""Math processing with numpy; nested fan-in (agg_trig, agg_matrices, agg_linalg inside agg_all).

Input: ``{"seed": int, "req": n}`` (XFaaS MathFunctions sample); everything derives from the seed.
"""

from __future__ import annotations

import numpy as np


def source(p):
    return {"seed": int(p["seed"]), "n": int(p["req"])}


def gen_int(p):
    return {"k": int(np.random.default_rng(p["seed"]).integers(2, 10_000))}


def gen_list(p):
    return {"xs": np.random.default_rng(p["seed"] + 1).normal(size=64).tolist()}


def gen_matrix_a(p):
    return {"A": np.random.default_rng(p["seed"] + 2).normal(size=(p["n"], p["n"])).tolist()}


def gen_matrix_b(p):
    return {"B": np.random.default_rng(p["seed"] + 3).normal(size=(p["n"], p["n"])).tolist()}


def sine(p):
    return {"sin": float(np.sin(p["k"]))}


def cosine(p):
    return {"cos": float(np.cos(p["k"]))}


def factors(p):
    k, out, d = p["k"], [], 2
    while d * d <= k:
        while k % d == 0:
            out.append(d)
            k //= d
        d += 1
    return {"factors": out + ([k] if k > 1 else [])}


def fft(p):
    return {"fft_energy": float(np.sum(np.abs(np.fft.fft(p["xs"])) ** 2))}


def _union(parts):
    out = {}
    for part in parts:
        out.update(part)
    return out


def agg_trig(parts):
    d = _union(parts)
    return {"pythagoras": d["sin"] ** 2 + d["cos"] ** 2, "factors": d["factors"]}


def agg_matrices(parts):
    return _union(parts)


def matmul(p):
    return {"trace_AB": float(np.trace(np.asarray(p["A"]) @ np.asarray(p["B"])))}


def linsolve(p):
    a, b = np.asarray(p["A"]), np.asarray(p["B"])
    x = np.linalg.solve(a, b[:, 0])
    return {"residual": float(np.linalg.norm(a @ x - b[:, 0]))}


def agg_linalg(parts):
    return _union(parts)


def agg_all(parts):
    return _union(parts)
