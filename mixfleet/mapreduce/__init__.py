"""MapReduce jobs on Ray actors, with the API data engineers know from mrjob.

A job is a :class:`Job` subclass (``mapper``, ``combiner``, ``reducer``,
``*_init``/``*_final``, ``steps()``); :func:`run` executes it on a master
actor and a pool of worker actors and returns a :class:`JobResult`. Ray is
imported only when a job runs.
"""

from mixfleet.mapreduce.job import Job, Step
from mixfleet.mapreduce.settings import RunConfig

__all__ = ["Job", "JobResult", "RunConfig", "Step", "run"]


def __getattr__(name: str):
    if name in ("run", "JobResult"):
        from mixfleet.mapreduce import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'mixfleet.mapreduce' has no attribute '{name}'")
