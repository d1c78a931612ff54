"""Early exit on Ray Serve, laid out like :mod:`mixfleet.routing.serve`.

``replica`` (the deployment: batching, early answers, adaptive thresholds),
``app`` (``build_app`` / ``app_builder`` / ``deploy``), ``policy`` (the
load-adaptive threshold controller), ``answers``, ``autoscale``, ``device``
(the EMULATED accelerator clock), ``loadtest`` and ``slabench`` (open-loop
SLA load test), ``demo`` (the ``mixfleet demo`` step) and ``proto`` (gRPC).
Nothing is imported here: importing the package costs nothing.
"""
