"""Word count with the chunk API: the mapper is called once per block of whole lines.

``mapper_chunk`` (mrjob's ``mapper_raw``, Spark's ``mapPartitions``) gets about
4 MiB of text at a time, so one ``findall`` replaces a Python call per line and
a pair per word. The counts are combined inside the map ("in-mapper combining",
Lin & Dyer, *Data-Intensive Text Processing with MapReduce*, 3.1): one
``Counter`` per map attempt, made in ``mapper_init``, updated per block and
emitted once by ``mapper_final``, so the runtime groups each word once per map
instead of once per block. The combiner, counters and fault handling are the
same as for a per-line mapper (a retried or backup attempt starts a fresh
``Counter``).

    mixfleet mapreduce run examples/mapreduce/wordcount_fast.py:WordCountFast \
        --input 'tests/data/gutenberg/*.txt' --output /tmp/wc-fast
"""

import re
from collections import Counter

from mixfleet.mapreduce import Job

WORD = re.compile(r"[A-Za-z]+")


class WordCountFast(Job):
    def mapper_init(self):
        self.counts = Counter()

    def mapper_chunk(self, text):
        self.counts.update(WORD.findall(text))

    def mapper_final(self):
        return self.counts.items()

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)
