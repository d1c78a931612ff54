"""A small numpy statevector simulator and an emulated QPU (a Ray actor with submit/poll).

Circuits are lists of gates ``[name, [qubits], param]`` with names ``h, x,
y, z, s, t, rx, ry, rz`` (one qubit) and ``cz, cx`` (two qubits). States are
big-endian: qubit 0 is the most significant bit, so the state of qubits
``0..k-1`` kron the state of ``k..n-1`` is the joint state.

EMULATION: :class:`QpuEmulator` is not quantum hardware. It queues jobs and
finishes each after ``queue_delay_s`` on a background thread (noiseless
statevector simulation), the way a remote QPU answers a submit/poll client.
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from mixfleet.errors import InputError

_S2 = 1 / np.sqrt(2)
ONE_QUBIT = {
    "h": lambda p: np.array([[_S2, _S2], [_S2, -_S2]], dtype=complex),
    "x": lambda p: np.array([[0, 1], [1, 0]], dtype=complex),
    "y": lambda p: np.array([[0, -1j], [1j, 0]], dtype=complex),
    "z": lambda p: np.diag([1, -1]).astype(complex),
    "s": lambda p: np.diag([1, 1j]),
    "t": lambda p: np.diag([1, np.exp(1j * np.pi / 4)]),
    "rx": lambda p: np.array([[np.cos(p / 2), -1j * np.sin(p / 2)], [-1j * np.sin(p / 2), np.cos(p / 2)]]),
    "ry": lambda p: np.array([[np.cos(p / 2), -np.sin(p / 2)], [np.sin(p / 2), np.cos(p / 2)]], dtype=complex),
    "rz": lambda p: np.diag([np.exp(-1j * p / 2), np.exp(1j * p / 2)]),
    "p0": lambda p: np.diag([1, 0]).astype(complex),  # projector |0><0| (circuit cutting)
    "p1": lambda p: np.diag([0, 1]).astype(complex),  # projector |1><1| (circuit cutting)
}
TWO_QUBIT = {"cz", "cx"}


def _apply1(state: np.ndarray, n: int, q: int, u: np.ndarray) -> np.ndarray:
    psi = state.reshape([2] * n)  # psi[i0, i1, ..., i_{n-1}]
    psi = np.tensordot(u, psi, axes=([1], [q]))  # new axis 0 = qubit q
    return np.moveaxis(psi, 0, q).reshape(-1)


def _apply_controlled(state: np.ndarray, n: int, c: int, t: int, u: np.ndarray) -> np.ndarray:
    psi = state.reshape([2] * n).copy()
    idx = [slice(None)] * n
    idx[c] = 1
    sub = psi[tuple(idx)]  # control = 1 subspace; target axis shifts if after control
    tq = t if t < c else t - 1
    sub = np.moveaxis(np.tensordot(u, sub, axes=([1], [tq])), 0, tq)
    psi[tuple(idx)] = sub
    return psi.reshape(-1)


def simulate(n_qubits: int, gates: list) -> np.ndarray:
    """The final statevector of ``gates`` applied to ``|0...0>`` (unnormalised if projectors are used)."""
    if not 1 <= n_qubits <= 20:
        raise InputError(f"bad qubit count {n_qubits}", "use 1..20 qubits")
    state = np.zeros(2 ** n_qubits, dtype=complex)
    state[0] = 1.0
    for g in gates:
        name, qubits = str(g[0]).lower(), list(g[1])
        param = float(g[2]) if len(g) > 2 and g[2] is not None else 0.0
        if any(not 0 <= q < n_qubits for q in qubits):
            raise InputError(f"gate {g} acts on a qubit outside 0..{n_qubits - 1}", "fix the circuit")
        if name in ONE_QUBIT and len(qubits) == 1:
            state = _apply1(state, n_qubits, qubits[0], ONE_QUBIT[name](param))
        elif name in TWO_QUBIT and len(qubits) == 2:
            u = ONE_QUBIT["z" if name == "cz" else "x"](0)
            state = _apply_controlled(state, n_qubits, qubits[0], qubits[1], u)
        else:
            raise InputError(f"unknown gate {g}", f"gates: {', '.join([*ONE_QUBIT, *TWO_QUBIT])}")
    return state


def to_pairs(state: np.ndarray) -> list[list[float]]:
    """JSON-friendly form of a statevector."""
    return [[float(z.real), float(z.imag)] for z in state]


def from_pairs(pairs) -> np.ndarray:
    return np.array([complex(a, b) for a, b in pairs])


class QpuEmulator:
    """EMULATION of a remote QPU: ``submit`` queues a circuit, ``poll`` reports (done, statevector)."""

    def __init__(self, queue_delay_s: float = 0.1):
        self.queue_delay_s = queue_delay_s
        self._jobs: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, n_qubits: int, gates: list) -> str:
        job = f"qpu-job-{next(self._ids)}"
        with self._lock:
            self._jobs[job] = {"done": False, "result": None, "submitted": time.time()}
        threading.Thread(target=self._work, args=(job, n_qubits, gates), daemon=True).start()
        return job

    def _work(self, job: str, n: int, gates: list) -> None:
        time.sleep(self.queue_delay_s)
        try:
            result = {"state": to_pairs(simulate(n, gates)), "error": None}
        except Exception as exc:
            result = {"state": None, "error": str(exc)}
        with self._lock:
            self._jobs[job].update(done=True, result=result)

    def poll(self, job: str) -> tuple[bool, dict | None]:
        with self._lock:
            if job not in self._jobs:
                raise KeyError(f"unknown QPU job '{job}'")
            j = self._jobs[job]
            return j["done"], j["result"]


QPU_ACTOR = "mixfleet-xfaas-qpu-emulator"


def qpu_handle(queue_delay_s: float = 0.1):
    """The shared emulated-QPU actor (created on first use; detached, so it outlives the task that created it)."""
    import ray

    from mixfleet.platform.bootstrap import head_affinity

    try:  # every submit and poll asks for the handle: look it up before placing a new one
        return ray.get_actor(QPU_ACTOR)
    except ValueError:
        pass
    cls = ray.remote(num_cpus=0)(QpuEmulator)
    options = dict(name=QPU_ACTOR, get_if_exists=True, lifetime="detached")
    strategy = head_affinity()  # on the head: on a worker node it would keep that node from scaling down
    if strategy is not None:
        options["scheduling_strategy"] = strategy
    return cls.options(**options).remote(queue_delay_s)
