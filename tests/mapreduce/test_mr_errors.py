"""Every bad-input case of the issue: one clear error line, non-zero exit, nothing half-written."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from mixfleet.errors import InputError, JobError
from mixfleet.mapreduce import run

HERE = Path(__file__).resolve().parent
JOBS = HERE / "mr_testjobs.py"
WC = "examples/mapreduce/wordcount.py:WordCount"

spec = importlib.util.spec_from_file_location("mr_testjobs_err", JOBS)
jobs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jobs)


def _no_output(out: Path) -> None:
    names = os.listdir(out) if out.exists() else []
    assert "_SUCCESS" not in names and not [n for n in names if n.startswith("part-")], names
    assert "_temporary" not in names


@pytest.fixture(scope="module")
def book(data_dir):
    return data_dir / "gutenberg" / "pg-metamorphosis.txt"


def test_missing_input_path(cli, tmp_path):
    r = cli("mapreduce", "run", WC, "--input", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "out"))
    assert r.returncode != 0
    assert r.error_line.startswith("error: input '") and "nope.txt' not found" in r.error_line
    assert not (tmp_path / "out").exists()


def test_glob_matching_nothing(cli, tmp_path):
    r = cli("mapreduce", "run", WC, "--input", str(tmp_path / "*.txt"), "--output", str(tmp_path / "out"))
    assert r.returncode != 0 and "matches no file" in r.error_line


def test_job_file_not_found(cli, tmp_path, book):
    r = cli("mapreduce", "run", "examples/mapreduce/wordcont.py:WordCount", "--input", str(book),
            "--output", str(tmp_path / "out"))
    assert r.returncode != 0 and "job file 'examples/mapreduce/wordcont.py' not found" in r.error_line


def test_job_class_not_found(cli, tmp_path, book):
    r = cli("mapreduce", "run", "examples/mapreduce/wordcount.py:WordCounter", "--input", str(book),
            "--output", str(tmp_path / "out"))
    assert r.returncode != 0
    assert "unknown job class 'WordCounter' in 'examples/mapreduce/wordcount.py'" in r.error_line
    assert "did you mean 'WordCount'" in r.error_line
    r = cli("mapreduce", "run", f"{JOBS}:NotAJob", "--input", str(book), "--output", str(tmp_path / "out"))
    assert r.returncode != 0 and "is not a mixfleet.mapreduce.Job subclass" in r.error_line


def test_mapper_that_raises_reports_traceback_task_and_offset(cli, ray_local, tmp_path, book):
    out = tmp_path / "out"
    r = cli("mapreduce", "run", f"{JOBS}:Boom", "--input", str(book), "--output", str(out),
            "--address", ray_local.address)
    assert r.returncode == 1
    text = book.read_text()
    offset = text.rfind("\n", 0, text.index("Gregor")) + 1  # start of the first line with 'Gregor'
    assert f"offset {offset}" in r.error_line
    assert "mapper failed in task s0-m-00000" in r.error_line and "ValueError: boom on purpose" in r.error_line
    assert 'raise ValueError("boom on purpose")' in r.stderr  # the user's own traceback
    _no_output(out)


def test_value_that_cannot_be_serialised(ray_local, tmp_path, book):
    with pytest.raises(JobError, match=r"value .*lock.* \(type lock\) for key 'lock' can't be serialised"):
        run(jobs.Unpicklable, [str(book)], str(tmp_path / "a"))
    _no_output(tmp_path / "a")
    with pytest.raises(JobError, match=r"can't be serialised as text.*type set"):
        run(jobs.NotJsonValue, [str(book)], str(tmp_path / "b"))
    _no_output(tmp_path / "b")


def test_output_that_exists_without_overwrite(cli, tmp_path, book):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = cli("mapreduce", "run", WC, "--input", str(book), "--output", str(out))
    assert r.returncode != 0 and f"output '{out}' already exists" in r.error_line and "--overwrite" in r.error_line
    assert (out / "keep.txt").read_text() == "precious"


def test_unreadable_files(tmp_path, cli):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file at all")
    r = cli("mapreduce", "run", WC, "--input", str(bad), "--output", str(tmp_path / "out"))
    assert r.returncode != 0 and "is unreadable as Parquet" in r.error_line and "bad.parquet" in r.error_line
    _no_output(tmp_path / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission(tmp_path, cli):
    f = tmp_path / "secret.txt"
    f.write_text("x\n")
    f.chmod(0)
    r = cli("mapreduce", "run", WC, "--input", str(f), "--output", str(tmp_path / "out"))
    assert r.returncode != 0 and "is not readable" in r.error_line


def test_bad_jsonl_line_names_file_and_offset(ray_local, tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"group": "a", "n": 1}\n{"group": oops}\n')
    with pytest.raises(InputError, match=r"rows.jsonl' has a bad JSON line at byte 23"):
        run(jobs.Rows, [str(f)], str(tmp_path / "out"))
    _no_output(tmp_path / "out")


def test_empty_input_gives_empty_output_and_success(ray_local, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    folder = tmp_path / "nothing"
    folder.mkdir()
    result = run(jobs.Counting, [str(empty), str(folder)], str(tmp_path / "out"))
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert list(result.read()) == [] and result.map_tasks == 0


def test_bad_option_values(cli, tmp_path, book):
    r = cli("mapreduce", "run", WC, "--input", str(book), "--output", str(tmp_path / "o"), "--format", "csv")
    assert r.returncode != 0 and "unknown output format 'csv'" in r.error_line
    r = cli("mapreduce", "run", WC, "--input", str(book), "--output", str(tmp_path / "o"), "--reducers", "0")
    assert r.returncode != 0 and "--reducers 0" in r.error_line
    r = cli("mapreduce", "run", "WordCount", "--input", str(book), "--output", str(tmp_path / "o"))
    assert r.returncode != 0 and "expected FILE.py:JobClass" in r.error_line
    for conf, line in [("speculaton=false", "unknown key 'speculaton' in run options (did you mean 'speculation'?)"),
                       ("claim_s=fast", "bad value 'fast' for 'claim_s'"),
                       ("claim_s", "--conf 'claim_s' is not KEY=VALUE"),
                       ("num_workers=3", "--conf num_workers has a flag of its own; use --workers")]:
        r = cli("mapreduce", "run", WC, "--input", str(book), "--output", str(tmp_path / "o"), "-D", conf)
        assert r.returncode != 0 and line in r.error_line, r.stderr
    assert not (tmp_path / "o").exists()


def test_reducer_yielding_no_pair_is_one_line_naming_the_users_file_and_line(cli, tmp_path, book):
    out = tmp_path / "out"
    r = cli("mapreduce", "run", f"{JOBS}:BadPairs", "--input", str(book), "--output", str(out), "--workers", "1")
    assert r.returncode == 1, r.stderr
    line = next(i for i, text in enumerate(JOBS.read_text().splitlines(), 1) if "BAD-PAIR-LINE" in text)
    assert r.error_line.startswith("error: reducer of BadPairs must yield (key, value) pairs; got 'lines=")
    assert f"{JOBS}:{line}" in r.error_line and "internal error" not in r.stderr
    _no_output(out)  # no _SUCCESS, no part file, no _temporary
    assert not list(tmp_path.glob(".out*"))  # and no staging folder
