"""mixfleet: a Ray-based compute and serving platform for mixed GPU fleets.

Parts (each imported on its own, lazily): ``mixfleet.platform``,
``mixfleet.mapreduce``, ``mixfleet.routing``, ``mixfleet.earlyexit`` and
``mixfleet.xfaas``. Importing ``mixfleet`` itself loads no heavy dependency.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
