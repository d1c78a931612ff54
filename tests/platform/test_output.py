"""Atomic writes: the file appears whole or not at all, with the mode a plain write would give it."""

import os
import stat

import pytest

from mixfleet.platform.output import atomic_write_bytes, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_new_file_gets_the_umask_mode_not_mkstemps_private_one(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = atomic_write_text(tmp_path / "model.json", "{}")
    finally:
        os.umask(old)
    assert _mode(out) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temp file left beside it


def test_rewriting_keeps_the_files_own_mode(tmp_path):
    out = tmp_path / "secret.yaml"
    out.write_text("old")
    out.chmod(0o600)
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and _mode(out) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "result.json"
    out.write_text("old")

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(out, "new")
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
