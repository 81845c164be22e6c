"""Queue a playlist into a running MPD (Music Player Daemon).

``moodshift playlist ... --mpd HOST:PORT`` sends the journey to the player a
library is played through. MPD names songs by their path under its
``music_directory``; ours are files under the catalogue's audio root. The two
are matched by path:

- over a local socket MPD tells its ``music_directory``: a track's URI is its
  absolute path relative to it;
- over TCP MPD keeps that to itself, so either ``music_dir`` is given
  (``--mpd-music-dir``), or the URI of the first track is found by searching
  MPD's database for its path relative to the catalogue's root (the library
  folder may be MPD's music folder or one of its sub-folders), and the same
  prefix is used for every track.

Every track is checked in MPD's database before anything is queued: a track
missing there (MPD's database not updated since the file was added, or a file
outside its music folder) is a clear error, and the queue is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from moodshift.errors import DependencyError, InputError

__all__ = ["parse_address", "queue_in_mpd"]

DEFAULT_PORT = 6600


def parse_address(address: str) -> tuple[str, int | None]:
    """``HOST:PORT``, ``HOST`` (port 6600), ``[v6]:PORT`` or a socket path.

    Parameters
    ----------
    address : str

    Returns
    -------
    host : str
        Host name, IP address, or the absolute path of MPD's local socket.
    port : int or None
        None for a socket path.

    Raises
    ------
    InputError
        Empty address or a port that is not a number in 1-65535.
    """
    address = address.strip()
    if not address:
        raise InputError("--mpd needs HOST:PORT (e.g. localhost:6600) or MPD's socket path.")
    if address.startswith(("/", "~")):
        return os.path.expanduser(address), None
    host, port = address, str(DEFAULT_PORT)
    if address.startswith("["):  # [::1]:6600
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif address.count(":") == 1:
        host, port = address.split(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--mpd {address}: the port must be a number in 1-65535 (HOST:PORT).")
    return host or "localhost", int(port)


def _connect(address: str, timeout: float) -> Any:
    try:
        from mpd import MPDClient
    except ImportError:
        raise DependencyError(
            "--mpd needs the python-mpd2 package: pip install python-mpd2"
        ) from None
    host, port = parse_address(address)
    client = MPDClient()
    client.timeout = timeout
    try:
        client.connect(host, port)
    except (OSError, Exception) as exc:  # ConnectionError, socket.timeout, mpd's own errors
        raise InputError(
            f"cannot reach MPD at {address} ({type(exc).__name__}: {exc}); start it "
            "(systemctl start mpd, or mpd CONFIG) or give the right --mpd HOST:PORT."
        ) from None
    return client


def _music_dir(client: Any) -> Path | None:
    """MPD's music directory where it tells (local socket connections only)."""
    try:
        d = client.config()
    except Exception:  # "permission denied" over TCP: MPD tells local clients only
        return None
    if isinstance(d, dict):
        d = d.get("music_directory")
    return Path(d).resolve() if d else None


def _in_database(client: Any, uri: str) -> bool:
    try:
        return bool(client.find("file", uri))
    except Exception:
        return False


def _prefix_by_search(client: Any, rel: PurePosixPath) -> str | None:
    """The part of MPD's URI before ``rel`` (the catalogue's path), found in its database."""
    try:
        hits = client.search("file", str(rel))
    except Exception:
        return None
    for hit in hits:
        uri = hit.get("file", "")
        if uri == str(rel):
            return ""
        if uri.endswith("/" + str(rel)):
            return uri[: -len(str(rel))]
    return None


def queue_in_mpd(
    *,
    address: str,
    tracks: Sequence[dict[str, Any]],
    audio_root: str | os.PathLike[str],
    music_dir: str | os.PathLike[str] | None = None,
    clear: bool = False,
    timeout: float = 10.0,
) -> list[str]:
    """Append ``tracks`` (a journey, in order) to MPD's queue.

    Parameters
    ----------
    address : str
        ``HOST:PORT``, ``HOST`` or MPD's socket path.
    tracks : sequence of dict
        Playlist items with ``track_id`` and ``audio_path`` (absolute path or None),
        as :meth:`~moodshift.retrieval.search.Searcher.playlist` returns them.
    audio_root : path
        The catalogue's audio root: every file must lie inside it.
    music_dir : path, optional
        MPD's ``music_directory`` as seen from here (needed over TCP only when the
        catalogue's paths are not found in MPD's database by themselves).
    clear : bool
        Empty MPD's queue first (default: append to it).
    timeout : float
        Seconds to wait for MPD on each command.

    Returns
    -------
    list of str
        The URIs queued, in order.

    Raises
    ------
    InputError
        MPD cannot be reached, a track has no audio file or lies outside the
        audio root, or a track is not in MPD's database (nothing is queued then).
    """
    root = Path(audio_root).resolve()
    rels: list[PurePosixPath] = []
    for t in tracks:
        path = t.get("audio_path")
        real = Path(path).resolve() if path else None
        if real is None or not real.is_relative_to(root):
            raise InputError(
                f"track {t.get('track_id')!r} has no audio file under {root}; MPD can only "
                "play files of the library folder."
            )
        rels.append(PurePosixPath(real.relative_to(root).as_posix()))
    client = _connect(address, timeout)
    try:
        base = Path(music_dir).expanduser().resolve() if music_dir else _music_dir(client)
        if base is not None:
            if not root.is_relative_to(base):
                raise InputError(
                    f"the catalogue's audio folder {root} is not inside MPD's music directory "
                    f"{base}; point MPD's music_directory at it (or a folder above it)."
                )
            prefix = root.relative_to(base).as_posix().removeprefix(".")
            prefix = f"{prefix}/" if prefix else ""
        else:
            prefix = next((p for r in rels[:1] if (p := _prefix_by_search(client, r)) is not None),
                          "")  # fmt: skip
        uris = [f"{prefix}{r}" for r in rels]
        missing = [(t.get("track_id"), u) for t, u in zip(tracks, uris, strict=True)
                   if not _in_database(client, u)]  # fmt: skip
        if missing:
            raise InputError(
                f"{len(missing)} of {len(uris)} tracks are not in MPD's database (first: "
                f"{missing[0][1]!r}); update it (mpc update, or `update` in your client) and "
                "check that MPD's music_directory holds the catalogue's folder (--mpd-music-dir "
                "says where it is)."
            )
        client.command_list_ok_begin()  # one round trip; MPD runs the list as one command
        if clear:
            client.clear()
        for u in uris:
            client.add(u)
        client.command_list_end()
        return uris
    finally:
        try:
            client.close()
            client.disconnect()
        except Exception:  # already gone: nothing left to release
            pass
