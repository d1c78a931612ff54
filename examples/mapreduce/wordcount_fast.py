"""Word count with the chunk API: the mapper is called once per block of whole lines.

``mapper_chunk`` (mrjob's ``mapper_raw``, Spark's ``mapPartitions``) gets about
4 MiB of text at a time, so one ``findall`` and one ``Counter`` replace a
Python call per line and a pair per word. The combiner, counters and fault
handling are the same as for a per-line mapper.

    mixfleet mapreduce run examples/mapreduce/wordcount_fast.py:WordCountFast \
        --input 'tests/data/gutenberg/*.txt' --output /tmp/wc-fast
"""

import re
from collections import Counter

from mixfleet.mapreduce import Job

WORD = re.compile(r"[A-Za-z]+")


class WordCountFast(Job):
    def mapper_chunk(self, text):
        return Counter(WORD.findall(text)).items()

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)
