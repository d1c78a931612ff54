"""Word count, as in the MapReduce lab: words are maximal runs of ASCII letters.

    mixfleet mapreduce run examples/mapreduce/wordcount.py:WordCount \
        --input 'tests/data/gutenberg/*.txt' --output /tmp/wc
"""

import re

from mixfleet.mapreduce import Job

WORD = re.compile(r"[A-Za-z]+")


class WordCount(Job):
    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)
