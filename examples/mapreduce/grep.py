"""Distributed grep (Hadoop's example): count the matches of a regex.

Set the pattern with the ``MIXFLEET_GREP`` environment variable when the job
object is built (the pattern travels with the job):

    MIXFLEET_GREP='[Ww]hale\\w*' mixfleet mapreduce run examples/mapreduce/grep.py:Grep \
        --input 'tests/data/gutenberg/*.txt' --output /tmp/grep
"""

import os
import re

from mixfleet.mapreduce import Job


class Grep(Job):
    def __init__(self, pattern: str | None = None):
        super().__init__()
        self.pattern = pattern or os.environ.get("MIXFLEET_GREP", r"\bHolmes\b")

    def mapper_init(self):
        self._regex = re.compile(self.pattern)

    def mapper(self, _, line):
        for match in self._regex.findall(line):
            yield match, 1
            self.increment_counter("grep", "matches")

    def combiner(self, match, counts):
        yield match, sum(counts)

    def reducer(self, match, counts):
        yield match, sum(counts)
