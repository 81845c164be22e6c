"""The audio hash: tags left out, audio kept, for every container it reads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moodshift.audio.audiohash import audio_sha256
from moodshift.audio.embedders.pipeline import file_sha256

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
SR = 22050
CODECS = {
    ".mp3": ["-c:a", "libmp3lame"],
    ".ogg": ["-c:a", "libvorbis"],
    ".opus": ["-c:a", "libopus"],
    ".flac": ["-c:a", "flac"],
    ".m4a": ["-c:a", "aac"],
    ".wav": [],
    ".aiff": [],
    ".wv": [],
}


def _encode(dst: Path, gain: float) -> None:
    t = np.arange(2 * SR) / SR
    sf.write(
        dst.with_suffix(".src.wav"), (gain * np.sin(2 * np.pi * 330 * t)).astype(np.float32), SR
    )
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dst.with_suffix(".src.wav")),
                    *CODECS[dst.suffix], "-map_metadata", "-1", str(dst)], check=True)  # fmt: skip


def _retag(path: Path) -> None:
    """Tags as a tagger writes them, large enough to move what follows them."""
    import mutagen
    from mutagen.id3 import APIC, TIT2, TMOO

    f = mutagen.File(path)
    if f.tags is None:
        f.add_tags()
    if path.suffix in (".mp3", ".wav", ".aiff"):  # ID3 (in a chunk for WAV and AIFF)
        f.tags.add(TIT2(encoding=3, text=["x" * 20_000]))
        f.tags.add(TMOO(encoding=3, text=["happy"]))
        f.tags.add(APIC(encoding=3, mime="image/png", type=3, data=b"\x89PNG" + b"\0" * 50_000))
    elif path.suffix == ".m4a":
        f.tags["\xa9nam"], f.tags["\xa9gen"] = ["x" * 20_000], ["Rock"]
    else:  # Vorbis comments (FLAC, Ogg, Opus), APEv2 (WavPack)
        f.tags["TITLE"], f.tags["MOOD"] = "x" * 20_000, "happy"
    f.save()


@pytest.mark.parametrize("ext", sorted(CODECS))
def test_tags_are_left_out_and_audio_is_kept(tmp_path: Path, ext: str) -> None:
    a, b = tmp_path / f"a{ext}", tmp_path / f"b{ext}"
    _encode(a, 0.3)
    _encode(b, 0.25)  # other audio, same container
    before, whole = audio_sha256(a), file_sha256(a)
    _retag(a)
    assert file_sha256(a) != whole  # the bytes changed ...
    assert audio_sha256(a) == before  # ... the audio did not
    assert audio_sha256(b) != before


def test_unknown_or_damaged_containers_are_hashed_whole(tmp_path: Path) -> None:
    junk = tmp_path / "x.wma"
    junk.write_bytes(b"not a container at all" * 10)
    assert audio_sha256(junk) == file_sha256(junk)
    broken = tmp_path / "y.ogg"
    broken.write_bytes(b"OggS" + b"\xff" * 40)  # page sync lost after the first header
    assert audio_sha256(broken) == file_sha256(broken)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)  # opening it for a blocking read would wait for a writer forever
    with pytest.raises(OSError, match="not a regular file"):
        audio_sha256(fifo)
