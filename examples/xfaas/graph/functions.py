"""Graph processing with networkx. Input: ``{"size", "edges", "startVertex"}`` (XFaaS graphAws sample)."""

from __future__ import annotations

import networkx as nx


def generate(p):
    g = nx.barabasi_albert_graph(int(p["size"]), int(p["edges"]), seed=int(p.get("seed", 7)))
    for i, (u, v) in enumerate(g.edges):
        g.edges[u, v]["weight"] = 1 + (u * 31 + v * 17 + i) % 10
    return {"graph": nx.node_link_data(g, edges="links"), "start": int(p["startVertex"])}


def _g(p):
    return nx.node_link_graph(p["graph"], edges="links")


def bfs(p):
    return {"bfs_order": [int(n) for n in nx.bfs_tree(_g(p), p["start"])]}


def pagerank(p):
    pr = nx.pagerank(_g(p))
    top = max(pr, key=pr.get)
    return {"pagerank_top": int(top), "pagerank_sum": float(sum(pr.values()))}


def mst(p):
    return {"mst_weight": float(nx.minimum_spanning_tree(_g(p)).size(weight="weight"))}


def aggregate(parts):
    out = {}
    for part in parts:  # fan-in order is bfs, pagerank, mst (edge order in the spec)
        out.update(part)
    out["order"] = [next(iter(p)) for p in parts]
    return out
