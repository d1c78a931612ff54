"""Quiet by default, loud on request: how much of Ray's own output a user sees.

By default a mixfleet command prints only mixfleet's output: Ray's, Serve's
and Ray Data's INFO logs, Ray Data's progress bars and the log lines that
Ray workers forward to the driver are off. ``mixfleet --verbose ...`` (or
``MIXFLEET_LOG=debug`` / ``info``) brings them back. :func:`connect` and
:func:`mixfleet.platform.serving.start_serve` apply these settings; nothing
else needs to.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ENV = "MIXFLEET_LOG"
DRIVER_LOGGERS = ("ray", "ray.serve", "ray.data", "ray.train", "ray.tune")
# Ray Data's own logging config with its console handler at WARNING (its file log is kept).
_RAY_DATA_CONFIG = Path(__file__).with_name("ray_data_logging.yaml")

_verbose: bool | None = None


def set_verbose(flag: bool | None) -> None:
    """Turn Ray's own logs on (``True``) or off for this process (the CLI's ``--verbose``); ``None``
    follows ``MIXFLEET_LOG`` again."""
    global _verbose
    _verbose = flag
    if flag:  # undo the quiet defaults this module set in the environment
        for key, ours in (("RAY_DATA_DISABLE_PROGRESS_BARS", "1"), ("RAY_DATA_LOGGING_CONFIG", str(_RAY_DATA_CONFIG))):
            if os.environ.get(key) == ours:
                del os.environ[key]
    quiet_driver()


def verbose() -> bool:
    """Whether Ray's own output is wanted: ``--verbose`` or ``MIXFLEET_LOG=debug|info``."""
    if _verbose is not None:
        return _verbose
    return os.environ.get(ENV, "").strip().lower() in ("debug", "info", "verbose", "1", "true")


def level() -> int:
    """The level for Ray's loggers on the driver: DEBUG/INFO when verbose, else ERROR.

    Quiet means quiet: Ray's start-up and Ray Data's progress notices are WARNINGs.
    """
    if not verbose():
        return logging.ERROR
    return logging.DEBUG if os.environ.get(ENV, "").strip().lower() == "debug" else logging.INFO


def ray_init_kwargs() -> dict:
    """What ``ray.init`` needs: its log level and whether workers' output reaches the driver."""
    return {"logging_level": level(), "log_to_driver": verbose()}


def serve_logging_config(*, access_log: bool = False) -> dict:
    """Serve's ``LoggingConfig`` (as a dict) for its controller, proxies and every deployment.

    Quiet keeps Serve's warnings in its log files (they never reach the driver: ``log_to_driver``
    is off), verbose brings back its INFO lines.
    """
    lvl = logging.WARNING if not verbose() else level()
    return {"log_level": logging.getLevelName(lvl), "enable_access_log": access_log}


def quiet_driver() -> None:
    """Set this process's Ray loggers and Ray Data's progress output to the wanted level.

    Safe to call many times; applied before and after ``ray.data`` is imported
    (its import installs its own console handler at INFO).
    """
    lvl = level()
    if not verbose():
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(_RAY_DATA_CONFIG))
    for name in DRIVER_LOGGERS:  # `import ray.serve` resets its logger to INFO: serving.py calls this after it
        logging.getLogger(name).setLevel(lvl)
    if "ray.data" in sys.modules:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = verbose()
        ctx.print_on_execution_start = verbose()
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(lvl)
