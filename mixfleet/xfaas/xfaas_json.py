"""Import XFaaS's own ``dag.json`` / ``dag-description.json`` as-is.

XFaaS format: ``{"WorkflowName", "Nodes": [{"NodeId", "NodeName", "Path",
"EntryPoint", "CSP", "MemoryInMB", "IsAsync"?}], "Edges": [{"A": ["B", ...]}]}``.
``CSP`` is ``AWS``/``Azure`` (a pin) or ``NA`` (free). If a
``dag-benchmark.json`` lies next to the file, its per-node latencies become
``exec_ms`` and its edge ``DataTransferSize`` (KB) the producer's
``output_kb``. The XFaaS function code is not shipped, so every node runs a
pass-through stand-in (:func:`mixfleet.xfaas.functions.xfaas_standin`) unless
``functions`` maps node names to import paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError

STANDIN = "mixfleet.xfaas.functions:xfaas_standin"
_CSP = {"aws": "aws", "azure": "azure", "gcp": "gcp", "na": None, "": None}
_NODE_KEYS = {"NodeId", "NodeName", "Path", "EntryPoint", "CSP", "MemoryInMB", "IsAsync"}


def _bad(src: str, what: str) -> ConfigError:
    return ConfigError(f"malformed XFaaS DAG {src}: {what}",
                       "expected {WorkflowName, Nodes: [{NodeId, NodeName, CSP, MemoryInMB}], Edges: [{A: [B]}]}")


def _benchmark(path: Path) -> dict[str, Any]:
    bench = path.with_name("dag-benchmark.json")
    if not bench.exists():
        return {}
    try:
        return json.loads(bench.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"malformed JSON in '{bench}' at line {exc.lineno}: {exc.msg}", "fix the syntax") from None


def spec_from_xfaas(data: Any, src: str, benchmark: dict | None = None,
                    functions: dict[str, str] | None = None) -> dict:
    """The plain-data :class:`WorkflowSpec` for an XFaaS DAG (validated here, field by field)."""
    if not isinstance(data, dict):
        raise _bad(src, f"top level is a {type(data).__name__}, not an object")
    for key in ("WorkflowName", "Nodes", "Edges"):
        if key not in data:
            raise _bad(src, f"missing key '{key}'")
    if not isinstance(data["Nodes"], list) or not data["Nodes"]:
        raise _bad(src, "'Nodes' must be a non-empty list")
    if not isinstance(data["Edges"], list):
        raise _bad(src, "'Edges' must be a list")
    functions = functions or {}
    node_bench = (benchmark or {}).get("NodeBenchmarks", {})
    edge_bench = (benchmark or {}).get("EdgeBenchmarks", {})
    nodes, by_id = [], {}
    for i, raw in enumerate(data["Nodes"]):
        if not isinstance(raw, dict) or "NodeName" not in raw:
            raise _bad(src, f"node #{i + 1} has no 'NodeName'")
        name = str(raw["NodeName"])
        extra = set(raw) - _NODE_KEYS
        if extra:
            raise _bad(src, f"node '{name}' has unknown key(s) {sorted(extra)}")
        csp = str(raw.get("CSP", "NA")).strip().lower()
        if csp not in _CSP:
            raise _bad(src, f"node '{name}' has unknown CSP '{raw.get('CSP')}' (expected AWS, Azure, GCP or NA)")
        mem = raw.get("MemoryInMB", 128)
        if not isinstance(mem, (int, float)) or mem <= 0:
            raise _bad(src, f"node '{name}' has bad MemoryInMB {mem!r}")
        node: dict[str, Any] = {"name": name, "function": functions.get(name, STANDIN), "memory_mb": int(mem),
                                "style": "plain"}
        if _CSP[csp]:
            node["pin"] = {"cloud": _CSP[csp]}
        nid = str(raw.get("NodeId", i + 1))
        by_id[nid] = name
        prof = node_bench.get(nid, {})
        exec_ms = {c.lower(): float(v["Latency"]) for c, v in prof.items() if isinstance(v, dict) and "Latency" in v}
        if exec_ms:
            node["exec_ms"] = exec_ms
        nodes.append(node)
    names = {n["name"] for n in nodes}
    out_kb: dict[str, float] = {}
    for nid, lst in edge_bench.items():
        for item in lst:
            for _dst, info in item.items():
                if nid in by_id and "DataTransferSize" in info:
                    out_kb[by_id[nid]] = max(out_kb.get(by_id[nid], 0.0), float(info["DataTransferSize"]))
    for n in nodes:
        if n["name"] in out_kb:
            n["output_kb"] = out_kb[n["name"]]
    edges = []
    for i, item in enumerate(data["Edges"]):
        if not isinstance(item, dict) or not item:
            raise _bad(src, f"edge #{i + 1} is not an object like {{\"A\": [\"B\"]}}")
        for u, vs in item.items():
            if not isinstance(vs, list) or not all(isinstance(v, str) for v in vs):
                raise _bad(src, f"edge #{i + 1} from '{u}' must map to a list of node names")
            edges.append({"from": u, "to": vs})
    del names
    return {"name": str(data["WorkflowName"]), "description": f"imported from XFaaS DAG {src}",
            "nodes": nodes, "edges": edges}


def workflow_from_xfaas(data: Any, path: Path, functions: dict[str, str] | None = None):
    from mixfleet.platform.config import parse_model
    from mixfleet.xfaas.spec import Workflow, WorkflowSpec

    src = f"'{path}'"
    raw = spec_from_xfaas(data, src, _benchmark(path), functions)
    return Workflow(parse_model(raw, WorkflowSpec, source=src), base_dir=path.parent, source=src)
