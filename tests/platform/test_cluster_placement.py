"""Platform actors that outlive an app must live on the head, or the autoscaler can never remove a node.

A detached actor on a worker node keeps that node busy ("Busy workers on
node.") for as long as it lives. The telemetry hub asks for no resources, and
Ray places such an actor on a random node unless its node affinity is hard,
so a hub first used by a Serve replica on a GPU node could pin that node for
good (found on the rehearsal cluster: the A100 node was never removed).
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.multinode


def _node_of(actor) -> str:
    import ray

    return ray._private.state.actors(actor._actor_id.hex())["Address"]["NodeID"]


def _kill_hub_for_good() -> None:
    import ray

    from mixfleet.platform.telemetry import get_hub
    from mixfleet.platform.telemetry.hub import HUB_NAME, NAMESPACE, forget_hub

    ray.kill(get_hub(), no_restart=True)
    forget_hub()
    deadline = time.monotonic() + 60
    while True:  # until the GCS has released the name
        try:
            ray.get_actor(HUB_NAME, namespace=NAMESPACE)
        except ValueError:
            return
        assert time.monotonic() < deadline, "the killed hub kept its name"
        time.sleep(0.1)


def test_a_hub_first_used_on_a_gpu_node_is_created_on_the_head(ray_cluster):
    import ray

    from mixfleet.platform.accelerators import RESOURCE_PREFIX
    from mixfleet.platform.telemetry import get_hub
    from mixfleet.platform.telemetry.hub import forget_hub

    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])

    @ray.remote(num_cpus=0)
    def first_use() -> str:
        from mixfleet.platform.telemetry import get_hub
        from mixfleet.platform.telemetry.hub import forget_hub

        forget_hub()  # a reused worker may hold the handle of a hub killed before
        ray.get(get_hub().ping.remote())
        return ray.get_runtime_context().get_node_id()

    try:
        for accel in ("A100", "V100", "T4"):
            _kill_hub_for_good()
            used_on = ray.get(first_use.options(resources={RESOURCE_PREFIX + accel: 0.001}).remote(), timeout=120)
            assert used_on != head
            assert _node_of(get_hub()) == head, f"the hub first used on the {accel} node was placed there"
    finally:
        forget_hub()
