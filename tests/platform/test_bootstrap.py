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
    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.serving import GRPC_SERVICERS, serve_ports, start_serve, stop_serve

    ports = serve_ports()
    started_here = ports is None
    if started_here:  # otherwise another module's Serve (started through start_serve) is checked as is
        start_serve(http_port=free_port(), grpc_port=free_port())
        ports = serve_ports()
    try:
        assert ports is not None and ports.http_port > 0
        if started_here or ports.grpc_port is not None:
            assert all(ports.grpc_port_for(s) == ports.grpc_port for s in GRPC_SERVICERS)
        assert ports.grpc_port_for("not.a.servicer") is None
    finally:
        if started_here:
            stop_serve()
    if started_here:
        assert serve_ports() is None
