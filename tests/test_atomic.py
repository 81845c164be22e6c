"""Crash-safe writes: a failed or killed write leaves the previous version, never half a file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from moodshift._atomic import (
    atomic_dir,
    atomic_file,
    remove_leftovers,
    resolve_dir,
    write_bytes,
    write_text,
)


def test_atomic_file_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text(path, "one")
    write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]
    # The usual umask-based mode, not mkstemp's owner-only 0600.
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_file(path, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_swaps_the_folder_whole(tmp_path):
    path = tmp_path / "model"
    with atomic_dir(path) as tmp:
        (tmp / "w.bin").write_bytes(b"v1")
        (tmp / "extra").write_text("only in v1")
    with atomic_dir(path) as tmp:
        (tmp / "w.bin").write_bytes(b"v2")
    assert sorted(p.name for p in path.iterdir()) == ["w.bin"]
    assert (path / "w.bin").read_bytes() == b"v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no .old, no .tmp left
    with pytest.raises(ValueError), atomic_dir(path) as tmp:
        (tmp / "w.bin").write_bytes(b"v3")
        raise ValueError
    assert (path / "w.bin").read_bytes() == b"v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_resolve_dir_finds_the_backup_of_an_interrupted_swap(tmp_path):
    path = tmp_path / "model"
    assert resolve_dir(path) == path  # neither: the path itself (its loader says it is missing)
    old = tmp_path / ".model.old"
    old.mkdir()
    assert resolve_dir(path) == old  # killed between the two renames
    path.mkdir()
    assert resolve_dir(path) == path


def test_leftovers_of_dead_saves_go_and_live_ones_stay(tmp_path):
    path = tmp_path / "index"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)  # that process has exited
    gone = tmp_path / f".index.{pid}.abc.tmp"
    older = tmp_path / ".index.abc.tmp"  # the form without a process id
    live = tmp_path / f".index.{os.getpid()}.xyz.tmp"
    other = tmp_path / f".catalog.{pid}.abc.tmp"  # another artefact's: not ours to remove
    for d in (gone, older, live, other):
        d.mkdir()
    assert sorted(remove_leftovers(path)) == sorted([gone, older])
    assert live.is_dir() and other.is_dir() and not gone.exists() and not older.exists()
