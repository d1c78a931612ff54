"""Circuit cutting on a CZ gate, parallel simulation of the pieces, recombination, and a QPU check.

A CZ between qubit ``a`` (block A) and ``b`` (block B) is ``P0(a) x I(b) + P1(a) x Z(b)``, so the
full state is ``sum_k  A_k |0> (x) B_k |0>`` where ``A_k`` runs block A's gates with ``P_k`` in the
CZ's place and ``B_k`` runs block B's gates with ``I`` / ``Z`` there. Each of the four pieces is
simulated on its own; ``recombine`` sums the two Kronecker products and is compared against the
full circuit run on the emulated QPU (a Ray actor answering submit/poll).
"""

from __future__ import annotations

import numpy as np

from mixfleet.xfaas.qpu import from_pairs, qpu_handle, simulate, to_pairs


def split(p):
    n, cut = int(p["qubits"]), int(p["cut"])
    gates = [list(g) for g in p["gates"]]
    cross = [i for i, g in enumerate(gates) if len(g[1]) == 2 and (g[1][0] < cut) != (g[1][1] < cut)]
    if len(cross) != 1 or gates[cross[0]][0] != "cz":
        raise ValueError(f"this splitter cuts exactly one cross-block cz gate; found {len(cross)} crossing gates")
    i = cross[0]
    qa, qb = sorted(gates[i][1])
    pieces = {}
    for k, (pa, pb) in enumerate([("p0", None), ("p1", "z")]):
        a = [g for g in gates[:i] if g[1][0] < cut] + [[pa, [qa]]] + [g for g in gates[i + 1:] if g[1][0] < cut]
        b = [g for g in gates[:i] if g[1][0] >= cut] + ([[pb, [qb]]] if pb else []) + [
            g for g in gates[i + 1:] if g[1][0] >= cut]
        pieces[f"a{k}"] = {"n": cut, "gates": a}
        pieces[f"b{k}"] = {"n": n - cut, "gates": [[g[0], [q - cut for q in g[1]], *g[2:]] for g in b]}
    return {"pieces": pieces, "qubits": n, "gates": gates}


def _sim(key):
    def run(p):
        piece = p["pieces"][key]
        return {"piece": key, "state": to_pairs(simulate(piece["n"], piece["gates"]))}

    run.__name__ = f"sim_{key}"
    return run


sim_a0, sim_a1, sim_b0, sim_b1 = _sim("a0"), _sim("a1"), _sim("b0"), _sim("b1")


def recombine(parts):
    s = {p["piece"]: from_pairs(p["state"]) for p in parts}
    state = np.kron(s["a0"], s["b0"]) + np.kron(s["a1"], s["b1"])
    return {"state": to_pairs(state), "order": [p["piece"] for p in parts]}


def qpu_submit(p):
    return {"job": __import__("ray").get(qpu_handle().submit.remote(p["qubits"], p["gates"]))}


def qpu_poll(handle):
    import ray

    done, result = ray.get(qpu_handle().poll.remote(handle["job"]))
    if done and result["error"]:
        raise RuntimeError(f"QPU job {handle['job']} failed: {result['error']}")
    return done, (result if done else None)


def compare(parts):
    cut_state = from_pairs(parts[0]["state"])
    qpu_state = from_pairs(parts[1]["state"])
    fidelity = float(abs(np.vdot(qpu_state, cut_state)) ** 2)
    probs = np.abs(cut_state) ** 2
    return {"fidelity": fidelity, "norm": float(probs.sum()), "max_abs_diff": float(np.max(np.abs(cut_state - qpu_state))),
            "most_likely": int(np.argmax(probs)), "order": parts[0]["order"]}
