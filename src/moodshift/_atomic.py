"""Crash-safe writes: write beside the destination, fsync, then rename.

A killed process leaves either the previous version or the new one, never a
half-written file. Folders (models, catalogues, indexes) are written to a
sibling temporary folder and swapped in with two renames; the old folder is
kept under a ``.old`` name until the new one is in place, so a crash between
the renames still leaves a loadable artefact (``resolve_dir`` finds it).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator:
    """Open a temporary file next to ``path``; rename it over ``path`` on success.

    Parameters
    ----------
    path : str or PathLike
        Destination; its folder is created when missing.
    mode : str
        ``open`` mode of the temporary file (``"wb"`` or ``"w"``).

    Yields
    ------
    file object
        The open temporary file.

    Raises
    ------
    BaseException
        Whatever the ``with`` body raises, after the temporary file is removed
        (``path`` is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes owner-only files; artefacts should get the usual umask-based mode.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`).

    Parameters
    ----------
    path : str or PathLike
    data : bytes
    """
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`).

    Parameters
    ----------
    path : str or PathLike
    text : str
    """
    with atomic_file(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``path`` whole.

    Usage::

        with atomic_dir(out) as tmp:
            (tmp / "weights.safetensors").write_bytes(...)

    Parameters
    ----------
    path : str or PathLike
        The folder to replace (or create).

    Yields
    ------
    Path
        The temporary folder to fill.

    Raises
    ------
    BaseException
        Whatever the ``with`` body raises, after the temporary folder is removed
        (``path`` is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    )
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _fsync_tree(tmp)
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary folders that killed saves of ``path`` left behind.

    A save's temporary folder is named ``.<name>.<pid>.<random>.tmp``; it is a
    leftover when that process no longer exists (a save running in another live
    process is left alone). Folders of the older ``.<name>.<random>.tmp`` form
    carry no process id and are removed too.

    Returns
    -------
    list of Path
        The folders removed.
    """
    path = Path(path)
    removed = []
    for cand in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not cand.is_dir() or cand.is_symlink():
            continue
        middle = cand.name[len(path.name) + 2 : -len(".tmp")]
        pid = middle.split(".", 1)[0]
        if pid.isdigit() and "." in middle and _alive(int(pid)):
            continue
        shutil.rmtree(cand, ignore_errors=True)
        removed.append(cand)
    if removed:
        log.warning("removed %d folder(s) left by an interrupted save: %s", len(removed),
                    ", ".join(map(str, removed)))  # fmt: skip
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def resolve_dir(path: str | os.PathLike[str]) -> Path:
    """Return ``path``, or its ``.old`` backup when a swap was interrupted.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    Path
        ``path`` when it exists or has no backup; else the backup.
    """
    path = Path(path)
    if not path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            return old
    return path


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
