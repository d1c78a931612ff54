"""Live heterogeneity-aware LLM serving on Ray Serve (GPU-typed replicas; EMULATED engines here).

The user-facing calls are :func:`build_app` / :func:`deploy` (a Serve
application: one ingress running the routing policy, one engine deployment
per fleet replica placed by ``accelerator_type``), :class:`ServeOptions`,
and the CLI ``mixfleet routing serve``. The routing policy objects are the
simulator's (:func:`mixfleet.routing.make_policy`); the emulated engine is
the simulator's engine run on a wall clock.

Importing this package does not import Ray.
"""

from mixfleet.routing.serve.app import APP_NAME, ServeOptions, build_app, deploy

__all__ = ["APP_NAME", "ServeOptions", "build_app", "deploy"]
