"""``moodshift bench embed``: embedding throughput on a library of real compressed files.

    moodshift bench embed                          # renders and encodes a small library
    moodshift bench embed --audio-dir ~/Music      # or measures on your own folder

For each embedder the library is embedded the way ``moodshift embed
--audio-dir`` does it (scan, tags, decode, embed, write the catalogue) into an
empty cache, then once more with nothing changed (the incremental re-run).
Reported per embedder: files per second and times real time (seconds of audio
per wall-clock second) of the cold run, the same per CPU second, and the
re-run's wall time; plus, once, decoding alone per format.

Without ``--audio-dir`` the library is made here: clips of the built-in
rendered corpus (FluidSynth) or, without FluidSynth, synthetic chords,
encoded as 44.1 kHz stereo MP3 (128k), Ogg Vorbis, FLAC and M4A (AAC 128k)
by ffmpeg (or MP3/Ogg/FLAC by libsndfile when ffmpeg is missing).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from moodshift.audio.corpus import build_corpus
from moodshift.audio.corpus.render import default_soundfonts
from moodshift.audio.embedders.pipeline import load_audio
from moodshift.audio.library import embed_library, scan_library
from moodshift.bench.core import stage
from moodshift.errors import InputError, MoodshiftError

__all__ = ["bench_embed", "make_bench_library"]

FORMATS = (".mp3", ".ogg", ".flac", ".m4a")
_FFMPEG_CODECS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "4"],
    ".flac": ["-c:a", "flac"],
    ".m4a": ["-c:a", "aac", "-b:a", "128k"],
}
_SNDFILE_FORMATS = {".mp3": ("MP3", "MPEG_LAYER_III"), ".ogg": ("OGG", "VORBIS"),
                    ".flac": ("FLAC", "PCM_16")}  # fmt: skip


def _sources(tmp: Path, *, n: int, seconds: float, seed: int, render: bool,
             progress: bool) -> list[Path]:  # fmt: skip
    """``n`` WAV clips of ``seconds`` each: rendered music if asked and FluidSynth is here."""

    if render and shutil.which("fluidsynth") and default_soundfonts():
        build_corpus(tmp / "corpus", n=n, seed=seed, clip_seconds=(seconds, seconds),
                     progress=progress)  # fmt: skip
        return sorted((tmp / "corpus" / "audio").glob("*.wav"))[:n]

    rng = np.random.default_rng(seed)
    out = []
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        y = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5)) / 3
        y = 0.4 * y * (1 + 0.3 * np.sin(2 * np.pi * 2 * t)) + 0.02 * rng.standard_normal(t.size)
        p = tmp / f"src{i:03d}.wav"
        sf.write(p, y.astype(np.float32), sr)
        out.append(p)
    return out


def make_bench_library(
    folder: str | Path, *, n_files: int = 12, seconds: float = 30.0, seed: int = 0,
    render: bool = True, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Write ``n_files`` compressed clips (formats in turn) under ``folder``.

    ``render=False`` encodes synthetic chords instead of rendered music (seconds
    faster to make; the throughput figures barely depend on the content).

    Returns
    -------
    dict
        ``source`` ("rendered" or "synthetic"), ``encoder`` ("ffmpeg" or
        "libsndfile") and ``formats`` (files per extension).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    use_ffmpeg = shutil.which("ffmpeg") is not None
    formats = FORMATS if use_ffmpeg else tuple(_SNDFILE_FORMATS)
    with tempfile.TemporaryDirectory(prefix="moodshift-bench-src-") as tmp:
        srcs = _sources(Path(tmp), n=n_files, seconds=seconds, seed=seed, render=render,
                        progress=progress)  # fmt: skip
        source = "rendered" if "corpus" in str(srcs[0]) else "synthetic"
        counts: dict[str, int] = {}
        for i, src in enumerate(srcs):
            ext = formats[i % len(formats)]
            dst = folder / f"artist{i % 3}" / f"{i:03d}{ext}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if use_ffmpeg:
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-ar", "44100",
                                "-ac", "2", *_FFMPEG_CODECS[ext], str(dst)],
                               check=True)  # fmt: skip
            else:
                y, sr = sf.read(src, dtype="float32")
                fmt, sub = _SNDFILE_FORMATS[ext]
                sf.write(dst, y, sr, format=fmt, subtype=sub)
            counts[ext] = counts.get(ext, 0) + 1
    return {"source": source, "encoder": "ffmpeg" if use_ffmpeg else "libsndfile",
            "formats": counts}  # fmt: skip


def _decode_only(files: Sequence[Path]) -> dict[str, Any]:

    per: dict[str, dict[str, float]] = {}
    for p in files:
        t0 = time.perf_counter()
        try:
            y, sr = load_audio(p)
        except Exception:  # counted by the embedding runs; decoding speed only here
            continue
        rec = per.setdefault(p.suffix.lower(), {"files": 0, "audio_s": 0.0, "wall_s": 0.0})
        rec["files"] += 1
        rec["audio_s"] += len(y) / sr
        rec["wall_s"] += time.perf_counter() - t0
    return {
        ext: {"files": int(r["files"]), "x_realtime": round(r["audio_s"] / r["wall_s"], 1),
              "ms_per_file": round(1000 * r["wall_s"] / r["files"], 1)}
        for ext, r in sorted(per.items())
    }  # fmt: skip


def bench_embed(
    *,
    audio_dir: str | Path | None = None,
    n_files: int = 12,
    clip_seconds: float = 30.0,
    embedders: Sequence[str] = ("features", "musicnn"),
    workers: int | None = None,
    seed: int = 0,
    render: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed a library of compressed files with each embedder and time it.

    Parameters
    ----------
    audio_dir : path, optional
        A music folder to measure on; default: make one (see :func:`make_bench_library`).
    n_files, clip_seconds : int, float
        Size of the made library.
    embedders : sequence of str
    workers : int, optional
        Worker processes, as ``moodshift embed --workers``.
    seed : int
    render : bool
        Make the library from rendered music (FluidSynth) rather than synthetic chords.
    progress : bool

    Returns
    -------
    dict
        ``library`` (files, audio seconds, formats, source), ``decode`` (per
        format: x real time, ms per file) and ``embedders``: per name
        ``files_per_s``, ``x_realtime``, ``x_realtime_per_cpu_s``, ``wall_s``,
        ``cpu_s``, ``rerun_wall_s``, ``dim``; or ``skipped`` with the reason.

    Raises
    ------
    InputError
        ``n_files`` or ``clip_seconds`` not positive.
    """

    if n_files < 1 or clip_seconds <= 0:
        raise InputError("--files and --clip-seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="moodshift-bench-embed-") as tmp_s:
        tmp = Path(tmp_s)
        if audio_dir is None:
            info = make_bench_library(tmp / "music", n_files=n_files, seconds=clip_seconds,
                                      seed=seed, render=render, progress=progress)  # fmt: skip
            audio_dir = tmp / "music"
        else:
            info = {"source": str(audio_dir)}
        files = scan_library(root=audio_dir).audio
        decode = _decode_only(files)
        out: dict[str, Any] = {"library": info, "decode": decode, "embedders": {}}
        audio_s = 0.0
        for name in embedders:
            rec: dict[str, Any] = {}
            try:
                from moodshift.audio.embedders import get_embedder

                get_embedder(name).embed(np.zeros(16000, np.float32) + 0.1, 16000)  # warm-up
                with stage(rec):
                    cat, rep = embed_library(audio_dir=audio_dir, out=tmp / f"out-{name}",
                                             embedder=name, cache_dir=tmp / f"cache-{name}",
                                             workers=workers, progress=progress)  # fmt: skip
                t0 = time.perf_counter()
                embed_library(audio_dir=audio_dir, out=tmp / f"out-{name}", embedder=name,
                              cache_dir=tmp / f"cache-{name}", progress=False)  # fmt: skip
                rec["rerun_wall_s"] = round(time.perf_counter() - t0, 3)
            except (MoodshiftError, ImportError, OSError) as exc:
                out["embedders"][name] = {"skipped": f"{type(exc).__name__}: {exc}"}
                continue
            durations = [float(d) for d in cat.labels["duration"] if str(d)]
            audio_s = sum(durations)
            rec["dim"] = cat.dim
            rec["files"] = len(cat)
            rec["failed"] = len(rep.failed)
            rec["files_per_s"] = round(len(cat) / rec["wall_s"], 2)
            rec["x_realtime"] = round(audio_s / rec["wall_s"], 1)
            rec["x_realtime_per_cpu_s"] = round(audio_s / max(rec["cpu_s"], 1e-9), 1)
            out["embedders"][name] = rec
        out["library"]["files"] = len(files)
        out["library"]["audio_s"] = round(audio_s, 1)
    return out
