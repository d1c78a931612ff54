"""A job reads from and writes to a real S3-compatible server (moto in server mode on 127.0.0.1).

The server is a real HTTP endpoint; the job talks to it through
``pyarrow.fs.S3FileSystem(endpoint_override=...)`` like it would to AWS.
"""

from __future__ import annotations

import importlib.util
import re
import socket
from collections import Counter
from pathlib import Path

import pytest

from mixfleet.mapreduce import run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mapreduce"
spec = importlib.util.spec_from_file_location("mr_ex_wc_s3", EXAMPLES / "wordcount.py")
wordcount = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wordcount)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                           endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True)
    fs.create_dir("books")
    yield fs
    server.stop()


def test_wordcount_from_s3_to_s3(ray_local, s3, data_dir):
    books = sorted((data_dir / "gutenberg").glob("pg-*.txt"))[:4]
    for b in books:
        with s3.open_output_stream(f"books/in/{b.name}") as f:
            f.write(b.read_bytes())
    result = run(wordcount.WordCount, ["s3://books/in/*.txt"], "s3://books/out", filesystem=s3, split_bytes=300_000)
    import pyarrow.fs as pafs

    names = sorted(i.base_name for i in s3.get_file_info(pafs.FileSelector("books/out")))
    assert names == ["_SUCCESS"] + [f"part-r-{i:05d}" for i in range(result.reduce_tasks)]
    expect = Counter(w for b in books for w in re.findall(r"[A-Za-z]+", b.read_text()))
    assert {k: int(v) for k, v in result.read()} == dict(expect)
    assert result.map_tasks >= 4
    # a second run into the same bucket path is refused without overwrite
    from mixfleet.errors import InputError

    with pytest.raises(InputError, match="already exists"):
        run(wordcount.WordCount, ["s3://books/in/*.txt"], "s3://books/out", filesystem=s3)
