"""Inverted index, as in the MapReduce lab: word -> "N doc1,doc2,..." (sorted docs).

    mixfleet mapreduce run examples/mapreduce/indexer.py:Indexer \
        --input 'tests/data/gutenberg/*.txt' --output /tmp/index
"""

import os
import re

from mixfleet.mapreduce import Job

WORD = re.compile(r"[A-Za-z]+")


class Indexer(Job):
    def mapper(self, _, line):
        doc = os.path.basename(self.input_file or "")
        for word in set(WORD.findall(line)):
            yield word, doc

    def combiner(self, word, docs):
        for doc in set(docs):
            yield word, doc

    def reducer(self, word, docs):
        docs = sorted(set(docs))
        yield word, f"{len(docs)} {','.join(docs)}"
