"""The shared platform layer: Ray bootstrap, cluster.yaml, config, output, errors.

Parts use these instead of their own: :func:`connect` (never ``ray.init``),
:func:`load_model` / :class:`StrictModel` (never raw ``yaml.load``),
:mod:`mixfleet.platform.serving` (the one Serve lifecycle, bound to
127.0.0.1), and the output helpers.
"""

from mixfleet.platform.bootstrap import Connection, connect, shutdown
from mixfleet.platform.cluster_config import ClusterSpec, NodeType, load_cluster_config
from mixfleet.platform.config import StrictModel, load_model, parse_model, read_config_file
from mixfleet.platform.local_cluster import EmulatedCluster, EmulatedNode, default_fleet_nodes
from mixfleet.platform.serving import start_serve, wait_for_signal

__all__ = [
    "ClusterSpec",
    "Connection",
    "EmulatedCluster",
    "EmulatedNode",
    "NodeType",
    "StrictModel",
    "connect",
    "default_fleet_nodes",
    "load_cluster_config",
    "load_model",
    "parse_model",
    "read_config_file",
    "shutdown",
    "start_serve",
    "wait_for_signal",
]
