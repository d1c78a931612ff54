"""Unit tests of the shared user-code loader (``FILE.py:NAME`` references; no Ray)."""

from __future__ import annotations

import sys

import pytest

from mixfleet.errors import ConfigError, InputError
from mixfleet.platform.usercode import get_attribute, load_module, split_reference


def _write(path, text):
    path.write_text(text)
    return path


def test_loads_a_file_once_and_finds_the_attribute(tmp_path):
    _write(tmp_path / "funcs.py", "CALLS = []\nCALLS.append(1)\n\ndef double(x):\n    return 2 * x\n")
    target, attr = split_reference("funcs.py:double", kind="function", example="funcs.py:double")
    module = load_module(target, base_dir=tmp_path)
    fn = get_attribute(module, attr, kind="function", valid=["double"], where=target)
    assert fn(21) == 42
    again = load_module(str(tmp_path / "funcs.py"))  # the same file by another spelling: not run twice
    assert again is module and module.CALLS == [1]
    assert sys.modules[module.__name__] is module


def test_same_stem_in_two_folders_are_two_modules(tmp_path):
    a = _write((tmp_path / "a").mkdir() or tmp_path / "a" / "funcs.py", "WHO = 'a'\n")
    b = _write((tmp_path / "b").mkdir() or tmp_path / "b" / "funcs.py", "WHO = 'b'\n")
    assert (load_module(str(a)).WHO, load_module(str(b)).WHO) == ("a", "b")


def test_bad_reference_names_it_and_gives_an_example():
    with pytest.raises(InputError, match=r"bad job reference 'wordcount\.py': expected FILE\.py:JobClass or "
                                         r"module:JobClass; for example x\.py:Job"):
        split_reference("wordcount.py", kind="job", name="JobClass", example="x.py:Job")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match=r"job file '.*nope\.py' not found; check the path"):
        load_module(str(tmp_path / "nope.py"), what="job file")
    with pytest.raises(InputError, match=r"is a directory, not a file"):
        load_module(str(tmp_path) + "/")


def test_syntax_error_names_file_and_line_and_leaves_no_module(tmp_path):
    bad = _write(tmp_path / "broken.py", "x = 1\ndef f(:\n    pass\n")
    before = set(sys.modules)
    with pytest.raises(ConfigError) as err:
        load_module("broken.py", base_dir=tmp_path, what="function file", context="node 'a'", error=ConfigError)
    msg = str(err.value)
    assert msg.startswith(f"node 'a': function file '{bad}' failed to import: SyntaxError")
    assert "line 2" in msg and f"`python {bad}`" in msg
    assert set(sys.modules) == before  # nothing half-imported is left behind


def test_error_raised_at_import_time_is_reported(tmp_path):
    _write(tmp_path / "raises.py", "raise RuntimeError('no config here')\n")
    with pytest.raises(InputError, match=r"failed to import: RuntimeError: no config here"):
        load_module(str(tmp_path / "raises.py"))


def test_module_references(tmp_path):
    assert load_module("json").dumps([1]) == "[1]"
    with pytest.raises(InputError, match=r"module 'no_such_pkg_xyz\.jobs' not found"):
        load_module("no_such_pkg_xyz.jobs")


def test_missing_attribute_suggests_and_lists_the_valid_names(tmp_path):
    module = load_module(str(_write(tmp_path / "jobs.py", "class WordCount: pass\nLIMIT = 3\n")))
    with pytest.raises(InputError) as err:
        get_attribute(module, "WordCounter", kind="job class", valid=["WordCount"], where="jobs.py")
    assert str(err.value) == ("unknown job class 'WordCounter' in 'jobs.py' (did you mean 'WordCount'?); "
                              "job classes there: WordCount")
    with pytest.raises(InputError, match=r"unknown function 'LIMIT'.*functions there: \(none\)"):
        get_attribute(module, "LIMIT", kind="function", valid=[], where="jobs.py", accept=callable)
