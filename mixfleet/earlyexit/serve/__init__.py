"""Early exit on Ray Serve, laid out like :mod:`mixfleet.routing.serve`.

``replica`` (the deployment: batching, early answers, adaptive thresholds),
``app`` (``build_app`` / ``app_builder`` / ``deploy``), ``policy`` (the
load-adaptive threshold controller and the Apparate-style baseline), ``answers``,
``autoscale``, ``device`` (the EMULATED accelerator clock), ``loadtest``,
``grpcload``, ``drift``, ``profile`` and ``slabench`` (the open-loop SLA
benchmark), ``demo`` (the ``mixfleet demo`` step) and ``proto`` (gRPC).
Nothing is imported here: importing the package costs nothing.
"""
