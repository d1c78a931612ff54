"""Workflow specs: YAML/JSON models and the validated DAG (:class:`Workflow`).

A workflow is nodes (functions referenced by import path) and edges.
Semantics the executor keeps:

- a source node gets the workflow input; a node with one predecessor gets
  its output; a node with several (fan-in) gets a list ordered by the
  position of the edges in the spec (deterministic, not by finish time);
- fan-out copies the output to every successor;
- an edge with ``when`` (an import path to ``predicate(payload) -> bool``)
  is taken only if the predicate holds for the producer's output; a node
  runs iff at least one incoming edge is taken (fan-in lists then hold only
  the taken inputs); skipped nodes take none of their outgoing edges;
- the output is the single sink's output, or ``{sink: output}`` for the
  sinks that ran.

Validation happens at load: cycles, dangling edges, unknown clouds or
functions are errors naming the node or edge, before anything runs.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field

from mixfleet.errors import ConfigError, did_you_mean
from mixfleet.platform.config import StrictModel, parse_model, read_config_file


class RetryPolicy(StrictModel):
    """Attempts in all, exponential backoff ``backoff_s * 2**(k-1)`` capped, +-``jitter`` fraction."""

    max_attempts: int = Field(default=1, ge=1, le=20)
    backoff_s: float = Field(default=0.05, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)


class PinSpec(StrictModel):
    cloud: str
    region: str | None = None


class AsyncSpec(StrictModel):
    """A submit/poll node: ``function`` submits and returns a handle; ``poll(handle)`` returns
    ``(done, result)``; polled every ``interval_s`` up to ``max_polls`` times."""

    poll: str
    interval_s: float = Field(default=0.05, gt=0)
    max_polls: int = Field(default=400, ge=1)


class NodeSpec(StrictModel):
    name: str = Field(min_length=1)
    function: str = Field(min_length=1)
    memory_mb: int = Field(default=128, ge=64, le=10240)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: RetryPolicy = RetryPolicy()
    pin: PinSpec | None = None
    need: Literal["qpu"] | None = None
    exec_ms: dict[str, float] = Field(default_factory=dict)
    output_kb: float = Field(default=1.0, ge=0)
    style: Literal["plain", "xfaas"] = "plain"
    async_: AsyncSpec | None = Field(default=None, alias="async")


class EdgeSpec(StrictModel):
    from_: str = Field(alias="from")
    to: list[str] | str
    when: str | None = None

    def targets(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)


class WorkflowSpec(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    nodes: list[NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)


class Workflow:
    """A validated workflow DAG. ``base_dir`` resolves ``file.py:func`` references."""

    def __init__(self, spec: WorkflowSpec, *, base_dir: Path | None = None, source: str = "workflow"):
        self.spec = spec
        self.base_dir = Path(base_dir) if base_dir else Path.cwd()
        self.source = source
        self.nodes: dict[str, NodeSpec] = {}
        for n in spec.nodes:
            if n.name in self.nodes:
                raise ConfigError(f"duplicate node '{n.name}' in {source}", "give every node a unique name")
            self.nodes[n.name] = n
        # (src, dst, when) in spec order; fan-in order follows this list
        self.edges: list[tuple[str, str, str | None]] = []
        seen = set()
        for i, e in enumerate(spec.edges):
            for dst in e.targets():
                for end, name in (("from", e.from_), ("to", dst)):
                    if name not in self.nodes:
                        raise ConfigError(
                            f"dangling edge #{i + 1} {e.from_} -> {dst} in {source}: {end} node '{name}' "
                            f"does not exist{did_you_mean(name, self.nodes)}",
                            f"nodes: {', '.join(self.nodes)}")
                if (e.from_, dst) in seen:
                    raise ConfigError(f"duplicate edge {e.from_} -> {dst} in {source}", "list each edge once")
                if e.from_ == dst:
                    raise ConfigError(f"cycle in {source}: edge {dst} -> {dst} loops on itself", "remove it")
                seen.add((e.from_, dst))
                self.edges.append((e.from_, dst, e.when))
        self._check_acyclic()

    # -- graph helpers -------------------------------------------------------------------------
    @cached_property
    def preds(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for u, v, _ in self.edges:
            out[v].append(u)
        return out

    @cached_property
    def succs(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for u, v, _ in self.edges:
            out[u].append(v)
        return out

    @cached_property
    def conditions(self) -> dict[tuple[str, str], str]:
        return {(u, v): w for u, v, w in self.edges if w}

    @property
    def sources(self) -> list[str]:
        return [n for n in self.nodes if not self.preds[n]]

    @property
    def sinks(self) -> list[str]:
        return [n for n in self.nodes if not self.succs[n]]

    @cached_property
    def graph(self):
        """The DAG as a ``networkx.DiGraph`` (nodes in spec order)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((u, v) for u, v, _ in self.edges)
        return g

    @cached_property
    def order(self) -> list[str]:
        """Topological order, ties broken by spec order (deterministic)."""
        import networkx as nx

        rank = {n: i for i, n in enumerate(self.nodes)}
        return list(nx.lexicographical_topological_sort(self.graph, key=rank.__getitem__))

    def _check_acyclic(self) -> None:
        import networkx as nx

        try:
            cycle = [u for u, _ in nx.find_cycle(self.graph)]
        except nx.NetworkXNoCycle:
            return
        path = " -> ".join([*cycle, cycle[0]])
        raise ConfigError(f"cycle in {self.source}: {path}", "a workflow must be a DAG; remove one edge")

    def check_clouds(self, clouds) -> None:
        """Pins and per-cloud profiles must name known clouds; QPU needs must be satisfiable."""
        for n in self.nodes.values():
            if n.pin is not None:
                if n.pin.cloud in clouds.excluded:
                    raise ConfigError(f"node '{n.name}' is pinned to cloud '{n.pin.cloud}', which is left out "
                                      f"of this run ({clouds.source})", "include that cloud or drop the pin")
                if n.pin.cloud not in clouds.names:
                    raise ConfigError(
                        f"node '{n.name}' is pinned to unknown cloud '{n.pin.cloud}'"
                        f"{did_you_mean(n.pin.cloud, clouds.names)}", f"valid clouds: {', '.join(clouds.names)}")
                region = clouds.get(n.pin.cloud).region
                if n.pin.region is not None and n.pin.region != region:
                    raise ConfigError(f"node '{n.name}' is pinned to region '{n.pin.region}' of cloud "
                                      f"'{n.pin.cloud}', which is emulated in region '{region}'",
                                      f"use region '{region}' or drop the region")
            for c in n.exec_ms:
                if c not in clouds.names and c not in clouds.excluded:
                    raise ConfigError(f"node '{n.name}' has exec_ms for unknown cloud '{c}'"
                                      f"{did_you_mean(c, clouds.names)}", f"valid clouds: {', '.join(clouds.names)}")

    def allowed_clouds(self, node: str, clouds) -> list[str]:
        """Where ``node`` may run: its pin, else accelerator clouds for its need, else general clouds."""
        n = self.nodes[node]
        if n.need is not None:
            ok = [c for c in clouds.names if clouds.get(c).accelerator == n.need]
        else:
            ok = clouds.general()
        if n.pin is not None:
            if n.pin.cloud not in ok:
                raise ConfigError(f"node '{node}' is pinned to cloud '{n.pin.cloud}', which cannot run it "
                                  f"({'needs ' + n.need if n.need else 'an accelerator-only cloud'})",
                                  f"pin it to one of: {', '.join(ok)}")
            return [n.pin.cloud]
        if not ok:
            raise ConfigError(f"node '{node}' needs '{n.need}' but no cloud provides it", "add one to the clouds file")
        return ok


def load_workflow(path: str | Path) -> Workflow:
    """Load a workflow YAML/JSON, or an XFaaS ``dag.json`` / ``dag-description.json`` as-is."""
    p = Path(path)
    data = read_config_file(p, what="workflow file")
    if isinstance(data, dict) and "Nodes" in data and "Edges" in data or (
            isinstance(data, dict) and "WorkflowName" in data):
        from mixfleet.xfaas.xfaas_json import workflow_from_xfaas

        return workflow_from_xfaas(data, p)
    spec = parse_model(data, WorkflowSpec, source=f"'{p}'")
    return Workflow(spec, base_dir=p.parent, source=f"'{p}'")
