"""Integration: the shared Ray bootstrap and GPU-typed placement on the emulated fleet."""

from __future__ import annotations

import pytest


def test_connect_is_idempotent(ray_local):
    import ray

    from mixfleet.platform import connect

    again = connect()
    assert again == ray_local and ray.is_initialized()
    assert ray.cluster_resources()["CPU"] >= 1


@pytest.mark.multinode
def test_accelerator_typed_actors_land_on_matching_nodes(ray_cluster):
    import ray

    from mixfleet.platform.status import node_rows

    by_node = {r["node_id"]: r["accelerator_type"] for r in node_rows()}

    @ray.remote(num_cpus=0, num_gpus=1)
    class Probe:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    for accel in ("A100", "V100", "T4"):
        probe = Probe.options(accelerator_type=accel).remote()
        assert by_node[ray.get(probe.node.remote())] == accel
        ray.kill(probe)


def test_serve_ports_reports_a_running_serve_with_every_mixfleet_servicer(ray_local):
    import socket

    from mixfleet.platform.bootstrap import GRPC_SERVICERS, serve_ports, start_serve

    if serve_ports() is not None:
        pytest.skip("another module's Serve is running in this session")

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    from ray import serve

    http, grpc = free_port(), free_port()
    start_serve(http_port=http, grpc_port=grpc)
    try:
        ports = serve_ports()
        assert ports is not None and ports.http_port == http
        assert all(ports.grpc_port_for(s) == grpc for s in GRPC_SERVICERS)
    finally:
        serve.shutdown()
    assert serve_ports() is None
