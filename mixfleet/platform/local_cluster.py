"""An emulated multi-node Ray cluster on one machine.

Built on ``ray.cluster_utils.Cluster``: every node is a real raylet, so
scheduling, placement by ``accelerator_type`` and node loss behave as on a
real cluster. GPUs are **emulated**: a node declares ``num_gpus`` and
``accelerator_type:<TYPE>`` but has no device behind it. Logical CPUs per
node are capped (default 2) so a laptop is not oversubscribed.

This is how a platform team rehearses a ``cluster.yaml`` fleet locally, and
how tests check GPU-typed placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixfleet.errors import ClusterError, InputError, did_you_mean
from mixfleet.platform.accelerators import ACCELERATORS, RESOURCE_PREFIX
from mixfleet.platform.cluster_config import ClusterSpec

NODE_TYPE_LABEL = "mixfleet.io/node-type"
EMULATED_LABEL = "mixfleet.io/emulated-gpu"


@dataclass(frozen=True)
class EmulatedNode:
    """One node to start: its type name, logical CPUs, GPUs and resources."""

    node_type: str
    cpus: float = 1
    gpus: float = 0
    accelerator_type: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def ray_args(self, object_store_mb: int) -> dict:
        resources = dict(self.resources)
        if self.accelerator_type:
            if self.accelerator_type not in ACCELERATORS:
                raise InputError(
                    f"unknown accelerator type '{self.accelerator_type}'"
                    f"{did_you_mean(self.accelerator_type, ACCELERATORS)}",
                    f"known types: {', '.join(ACCELERATORS)}",
                )
            resources[RESOURCE_PREFIX + self.accelerator_type] = 1
        labels = {NODE_TYPE_LABEL: self.node_type, **self.labels}
        if self.gpus:
            labels[EMULATED_LABEL] = "true"
        return {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "resources": resources,
            "labels": labels,
            "object_store_memory": object_store_mb * 1024 * 1024,
        }


def nodes_from_spec(
    spec: ClusterSpec,
    counts: dict[str, int] | None = None,
    cpus_per_node: float = 2,
) -> list[EmulatedNode]:
    """Worker nodes to emulate: ``min_workers`` of each type, or ``counts``."""
    counts = dict(counts or {})
    for name in counts:
        if name not in spec.node_types:
            raise InputError(
                f"unknown node type '{name}' in --nodes{did_you_mean(name, spec.node_types)}",
                f"node types in {spec.path}: {', '.join(spec.node_types)}",
            )
    nodes: list[EmulatedNode] = []
    for nt in spec.worker_types():
        n = counts.get(nt.name, nt.min_workers)
        if n < 0:
            raise InputError(f"negative node count {n} for '{nt.name}'", "use 0 or more")
        for _ in range(n):
            extra = {k: v for k, v in nt.resources.items()
                     if k not in ("CPU", "GPU", "memory", "object_store_memory")
                     and not k.startswith(RESOURCE_PREFIX)}
            nodes.append(EmulatedNode(
                node_type=nt.name,
                cpus=min(nt.cpus or cpus_per_node, cpus_per_node),
                gpus=nt.gpus,
                accelerator_type=nt.accelerator_type,
                resources=extra,
            ))
    return nodes


class EmulatedCluster:
    """A head plus emulated worker nodes; a context manager.

    >>> with EmulatedCluster([EmulatedNode("gpu_t4", gpus=1, accelerator_type="T4")]) as c:
    ...     connect(c.address)
    """

    def __init__(self, nodes: list[EmulatedNode], *, head_cpus: float = 2, object_store_mb: int = 100):
        self.nodes = list(nodes)
        self.head_cpus = head_cpus
        self.object_store_mb = object_store_mb
        self._cluster = None
        self._handles: list = []

    @property
    def address(self) -> str:
        if self._cluster is None:
            raise ClusterError("the emulated cluster is not started", "call start() first")
        return self._cluster.address

    def start(self) -> EmulatedCluster:
        from ray.cluster_utils import Cluster

        head = EmulatedNode("head", cpus=self.head_cpus).ray_args(max(self.object_store_mb, 200))
        try:
            self._cluster = Cluster(initialize_head=True, head_node_args=head)
            self._handles = [
                self._cluster.add_node(wait=False, **n.ray_args(self.object_store_mb)) for n in self.nodes
            ]
            self._cluster.wait_for_nodes(timeout=120)
        except Exception as exc:
            self.shutdown()
            raise ClusterError(f"could not start the emulated cluster: {exc}", "see the Ray logs in /tmp/ray") from None
        return self

    def node_handle(self, index: int):
        """The ``ray._private.node.Node`` of worker ``index`` (for fault tests)."""
        return self._handles[index]

    def add_node(self, node: EmulatedNode):
        handle = self._cluster.add_node(**node.ray_args(self.object_store_mb))
        self.nodes.append(node)
        self._handles.append(handle)
        return handle

    def remove_node(self, index: int) -> None:
        """Kill worker ``index`` abruptly, as a lost machine would be."""
        self._cluster.remove_node(self._handles[index], allow_graceful=False)

    def shutdown(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None

    def __enter__(self) -> EmulatedCluster:
        return self.start() if self._cluster is None else self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def default_fleet_nodes() -> list[EmulatedNode]:
    """The 3-type fleet tests and demos use: one A100, one V100, one T4 node."""
    return [
        EmulatedNode("gpu_a100", cpus=1, gpus=2, accelerator_type="A100"),
        EmulatedNode("gpu_v100", cpus=1, gpus=2, accelerator_type="V100"),
        EmulatedNode("gpu_t4", cpus=1, gpus=2, accelerator_type="T4"),
    ]
