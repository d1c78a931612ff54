"""Smart Grid stand-in functions: small real work; emulated exec times come from dag-benchmark.json.

Payload: ``{"readings": [kWh, ...], "steps": n, "anomalies": [...]}``; ``steps`` counts the
functions on the longest path so far (fan-in takes the max), so the output shows the
critical path was walked. The XFaaS originals (xmlparse, memstress, resnet, iostress) are
not shipped; these stand-ins keep their shape.
"""

from __future__ import annotations

import hashlib
import tempfile
import xml.etree.ElementTree as ET

import numpy as np


def _merge(payload):
    if isinstance(payload, list):  # fan-in: same readings on every branch; longest path wins
        anomalies = sorted({a for p in payload for a in p.get("anomalies", [])})
        return {"readings": payload[0]["readings"], "steps": max(p["steps"] for p in payload),
                "anomalies": anomalies}
    return dict(payload, steps=payload.get("steps", 0), anomalies=list(payload.get("anomalies", [])))


def xml_parse(payload):
    p = _merge(payload)
    xml = "<readings>" + "".join(f"<r i='{i}'>{v!r}</r>" for i, v in enumerate(p["readings"])) + "</readings>"
    p["readings"] = [float(r.text) for r in ET.fromstring(xml).iter("r")]
    p["steps"] += 1
    return p


def mem_stress(payload):
    p = _merge(payload)
    block = np.frombuffer(np.random.default_rng(0).bytes(1 << 20), dtype=np.uint8)  # 1 MiB touch
    assert block.size == 1 << 20
    x = np.asarray(p["readings"])
    z = (x - x.mean()) / (x.std() or 1.0)
    p["anomalies"] = sorted(set(p["anomalies"]) | {int(i) for i in np.flatnonzero(np.abs(z) > 2.5)})
    p["steps"] += 1
    return p


def resnet_infer(payload):
    p = _merge(payload)
    x = np.asarray(p["readings"], dtype=float)
    w = np.random.default_rng(42).normal(size=(x.size, 8))
    _ = np.maximum(x @ w, 0.0)  # one dense ReLU layer as the "model"
    p["steps"] += 1
    return p


def io_stress(payload):
    p = _merge(payload)
    data = np.asarray(p["readings"]).tobytes()
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    p["steps"] += 1
    return p
