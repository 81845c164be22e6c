"""A file's audio identity: SHA-256 of its audio bytes, its tags left out.

The embedding cache is keyed on this hash, so a file retagged in Picard, beets
or any player (new title, mood, cover art, padding) keeps its key and is not
re-analysed, while an edit of the audio itself changes it. Each container's
tags sit in known places, so the hash reads the audio's bytes only, without
decoding (about as fast as reading the file):

========================  ==========================================================
MP3, AAC (ADTS), WavPack  the bytes between leading ID3v2 tags and trailing
APE                       ID3v1 / APEv2 / ID3v2-footer tags
FLAC                      the frames after the metadata blocks (and any ID3 tags)
Ogg (Vorbis, Opus, FLAC)  the bodies of the audio pages: the header pages before
                          a stream's first granule position > 0 (where the comment
                          packet lives) are left out, and page headers too, since a
                          tag edit renumbers the pages that follow it
MP4, M4A                  the contents of the ``mdat`` atoms (the tags live in
                          ``moov``, whose chunk offsets change when it grows)
WAV, AIFF                 the ``fmt``/``COMM`` and ``data``/``SSND`` chunks
anything else (WMA, MKA)  the whole file: there a tag edit means a re-analysis
========================  ==========================================================
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["audio_sha256"]

_CHUNK = 1 << 20


def audio_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's audio bytes, its tag blocks left out (see the module doc).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    str
        64 hex digits; equal for two files whose audio bytes are equal, whatever
        their tags.

    Raises
    ------
    OSError
        The file cannot be read, or is not a regular file (never read then).
    """
    h = hashlib.sha256()
    # Non-blocking, then checked: a FIFO or device swapped in after the folder scan is
    # refused at once instead of blocking or reading forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (a device, FIFO or socket)", str(path))
    with os.fdopen(fd, "rb") as fh:
        size = st.st_size
        for start, end in _audio_spans(fh, size):
            fh.seek(start)
            left = end - start
            while left > 0:
                block = fh.read(min(_CHUNK, left))
                if not block:
                    break
                h.update(block)
                left -= len(block)
    return h.hexdigest()


def _audio_spans(fh: BinaryIO, size: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` holding the audio, in file order."""
    fh.seek(0)
    head = fh.read(12)
    try:
        if head[:4] == b"OggS":
            spans = list(_ogg_audio_pages(fh, size))
        elif head[4:8] == b"ftyp":
            spans = list(_atoms(fh, size, want={b"mdat"}, big_endian=True, header=8))
        elif head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            spans = list(_atoms(fh, size, want={b"fmt ", b"data"}, big_endian=False, header=12))
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            spans = list(_atoms(fh, size, want={b"COMM", b"SSND"}, big_endian=True, header=12))
        else:
            start = _skip_id3v2(fh, 0, size)
            end = _strip_trailing_tags(fh, start, size)
            fh.seek(start)
            if fh.read(4) == b"fLaC":
                start = _skip_flac_metadata(fh, start + 4, end)
            spans = [(start, end)]
    except (struct.error, ValueError):  # a damaged container: hash it whole
        spans = []
    spans = [(a, b) for a, b in spans if 0 <= a < b <= size]
    return spans or [(0, size)]


def _syncsafe(b: bytes) -> int:
    return (b[0] & 0x7F) << 21 | (b[1] & 0x7F) << 14 | (b[2] & 0x7F) << 7 | (b[3] & 0x7F)


def _skip_id3v2(fh: BinaryIO, pos: int, end: int) -> int:
    """The offset after any ID3v2 tags at ``pos`` (taggers may stack several)."""
    while pos + 10 <= end:
        fh.seek(pos)
        h = fh.read(10)
        if h[:3] != b"ID3" or h[3] == 0xFF or any(x & 0x80 for x in h[6:10]):
            break
        pos += 10 + _syncsafe(h[6:10]) + (10 if h[5] & 0x10 else 0)
    return min(pos, end)


def _strip_trailing_tags(fh: BinaryIO, start: int, end: int) -> int:
    """The end of the audio before ID3v1, APEv2 and appended ID3v2 tags."""
    while end > start:
        if end - start >= 32:
            fh.seek(end - 32)
            foot = fh.read(32)
            if foot[:8] == b"APETAGEX":
                n, flags = struct.unpack("<I4xI", foot[12:24])
                end -= n + (32 if flags & 0x80000000 else 0)
                continue
        if end - start >= 128:
            fh.seek(end - 128)
            if fh.read(3) == b"TAG":
                end -= 128
                continue
        if end - start >= 10:
            fh.seek(end - 10)
            foot = fh.read(10)
            if foot[:3] == b"3DI":
                end -= 20 + _syncsafe(foot[6:10])
                continue
        break
    return max(end, start)


def _skip_flac_metadata(fh: BinaryIO, pos: int, end: int) -> int:
    """The offset of the first FLAC frame (after STREAMINFO, VORBIS_COMMENT, PICTURE, ...)."""
    while pos + 4 <= end:
        fh.seek(pos)
        h = fh.read(4)
        pos += 4 + int.from_bytes(h[1:4], "big")
        if h[0] & 0x80:  # the last metadata block
            break
    return pos


def _ogg_audio_pages(fh: BinaryIO, size: int) -> Iterator[tuple[int, int]]:
    """The body of every audio page of each logical stream (from its first granule > 0)."""
    pos = 0
    audio: set[bytes] = set()  # serials whose header pages are over
    while pos + 27 <= size:
        fh.seek(pos)
        h = fh.read(27)
        if h[:4] != b"OggS":
            raise ValueError("lost Ogg page sync")
        granule = struct.unpack("<q", h[6:14])[0]
        serial = h[14:18]
        lacing = fh.read(h[26])
        body = pos + 27 + h[26]
        pos = body + sum(lacing)
        # Header pages hold granule 0, or -1 where a long comment packet spans them.
        if granule > 0:
            audio.add(serial)
        if serial in audio:
            yield body, pos


def _atoms(fh: BinaryIO, size: int, *, want: set[bytes], big_endian: bool,
           header: int) -> Iterator[tuple[int, int]]:  # fmt: skip
    """Contents of the top-level MP4 atoms (``header`` 8) or RIFF/IFF chunks (12) in ``want``."""
    order = ">" if big_endian else "<"
    pos = 0 if header == 8 else 12
    while pos + 8 <= size:
        fh.seek(pos)
        h = fh.read(8)
        if header == 12:  # RIFF/IFF: id, then size; chunks are padded to an even length
            kind, n = h[:4], struct.unpack(order + "I", h[4:8])[0]
            start, end = pos + 8, pos + 8 + n
            nxt = end + (n & 1)
        else:  # MP4: size, then type (size 1: a 64-bit size follows; 0: to the end)
            n, kind = struct.unpack(">I", h[:4])[0], h[4:8]
            start = pos + 8
            if n == 1:
                n = struct.unpack(">Q", fh.read(8))[0]
                start += 8
            elif n == 0:
                n = size - pos
            if n < start - pos:
                raise ValueError("bad atom size")
            end = nxt = pos + n
        if kind in want:
            yield start, min(end, size)
        pos = nxt
