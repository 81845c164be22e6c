"""Embed many audio files: decode, skip bad files with a reason, cache, optionally in parallel.

A bad file (missing, empty, corrupt, silent, unsupported, too long) or an
embedder failure on one file never aborts a run: it is listed in
:attr:`EmbeddingRun.failures` as ``(path, reason)``, and the run goes on.

Caching: with ``cache_dir``, each track's raw (unstandardised) embedding is
stored as ``<cache_dir>/<embedder name>-<provenance hash>/<sha[:2]>/<sha>.npy``
where ``sha`` is the SHA-256 of the file's audio bytes, its tags left out
(:func:`moodshift.audio.audiohash.audio_sha256`), so renamed, moved or retagged
files hit the cache and files whose audio changed miss it; any change of
embedder options or version (or of the excerpts analysed) changes the
provenance hash. Files are written atomically.

Excerpts: ``excerpts=Excerpts(n=3, seconds=30)`` embeds only three 30 s windows
spread over each track longer than 90 s (centred at 1/4, 1/2 and 3/4 of it), as
library analysers do to bound the time per track; shorter tracks are embedded whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import pickle
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from moodshift._atomic import atomic_file, write_text
from moodshift.audio.audiohash import audio_sha256
from moodshift.audio.embedders.base import Embedder, get_embedder, to_mono_float32
from moodshift.audio.embedders.standardize import Standardizer, fit_standardizer
from moodshift.errors import AudioError, InputError, MoodshiftError

__all__ = [
    "DEFAULT_EXCERPTS",
    "SILENCE_PEAK",
    "SUPPORTED_EXTENSIONS",
    "EmbeddingRun",
    "Excerpts",
    "embed_files",
    "file_sha256",
    "load_audio",
]

log = logging.getLogger(__name__)

#: A file whose absolute peak stays below this is reported as silent.
SILENCE_PEAK = 1e-4

# Decoded by libsndfile (soundfile) first: it is the fastest here (60 s of stereo
# MP3, one run on a loaded machine: 0.08 s, against 0.4 s through PyAV).
# libsndfile >= 1.1 also reads MP3 and Opus.
_SNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
     ".au", ".snd", ".caf", ".w64", ".rf64"}
)  # fmt: skip
# Decoded by FFmpeg through PyAV (its wheels bundle FFmpeg): the formats libsndfile
# lacks (AAC/ALAC in MP4, WMA, Matroska/WebM), and the fallback when libsndfile
# refuses a file of its own formats (unusual MP3 headers, Ogg with other codecs).
_FFMPEG_EXTENSIONS = frozenset({".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".webm",
                                ".mka", ".ape", ".wv"}) | _SNDFILE_EXTENSIONS  # fmt: skip
SUPPORTED_EXTENSIONS: frozenset[str] = _SNDFILE_EXTENSIONS | _FFMPEG_EXTENSIONS


@dataclass(frozen=True)
class Excerpts:
    """Analyse ``n`` windows of ``seconds`` each, spread over a long track, not all of it.

    Attributes
    ----------
    n : int
        Windows per track, centred at ``(i + 1) / (n + 1)`` of its duration.
    seconds : float
        Length of each window. Tracks up to ``n * seconds`` long are used whole.
    """

    n: int = 3
    seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.n < 1 or not self.seconds > 0:
            raise InputError(f"excerpts need n >= 1 and seconds > 0, got {self.n}, {self.seconds}")

    def cut(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The windows of ``audio`` (n_samples,), joined: (<= n * seconds * sr,)."""
        w = round(self.seconds * sr)
        if audio.shape[0] <= self.n * w:
            return audio
        centres = [(i + 1) * audio.shape[0] // (self.n + 1) for i in range(self.n)]
        starts = [min(max(c - w // 2, 0), audio.shape[0] - w) for c in centres]
        return np.concatenate([audio[s : s + w] for s in starts])

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in a catalogue's provenance."""
        return {"n": self.n, "seconds": self.seconds}


#: What a music folder is analysed as by default (``moodshift embed --audio-dir``): it lets
#: 10,000 tracks finish in about 3 hours on 2 cores (docs/library.md has the figures).
DEFAULT_EXCERPTS = Excerpts(n=3, seconds=30.0)


@dataclass
class EmbeddingRun:
    """Result of :func:`embed_files`.

    Attributes
    ----------
    embeddings : ndarray, shape (n_ok, dim), float32
        One row per successfully embedded file, in input order; standardised
        when ``provenance["standardizer"]`` is set.
    ok_indices : ndarray, shape (n_ok,), int64
        Index into the input path list of each row.
    failures : list of (str, str)
        ``(path, reason)`` for every skipped file, in input order.
    provenance : dict
        The embedder's provenance (``name``, ``version``, ``dim``, ``options``),
        plus ``standardizer`` (``{"mean": [...], "std": [...]}`` or None).
    n_cached : int
        How many rows came from the cache.
    """

    embeddings: np.ndarray
    ok_indices: np.ndarray
    failures: list[tuple[str, str]]
    provenance: dict[str, Any]
    n_cached: int = 0
    n_total: int = field(default=0)

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        """One line: how many embedded, from cache, failed."""
        return (
            f"{len(self.ok_indices)}/{self.n_total} files embedded "
            f"({self.n_cached} from cache), {self.n_failed} skipped"
        )


# --------------------------------------------------------------------------- decoding
def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_audio(
    path: str | os.PathLike[str], *, max_duration_s: float | None = 1200.0
) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 at its own sample rate.

    Parameters
    ----------
    path : str or PathLike
    max_duration_s : float or None, default 1200
        Longer files are refused (checked from the header before decoding).

    Returns
    -------
    audio : ndarray, shape (n,), float32
    sr : int

    Raises
    ------
    AudioError
        Missing, empty, unsupported, corrupt, too long or silent file; the
        message says which.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise AudioError(
            f"unsupported file type {ext or '(no extension)'!r}; convert it to one of "
            f"{', '.join(sorted(SUPPORTED_EXTENSIONS))}"
        )
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise AudioError("file not found") from None
    except OSError as exc:
        raise AudioError(f"cannot read file: {exc.strerror or exc}") from None
    if not p.is_file():
        raise AudioError("not a regular file")
    if size == 0:
        raise AudioError("empty file (0 bytes)")

    audio, sr = _decode(p, ext, max_duration_s)
    if audio.size == 0:
        raise AudioError("no audio samples (0 frames)")
    if sr <= 0:
        raise AudioError(f"invalid sample rate {sr} Hz in header; the file is corrupt")
    _check_duration(audio.shape[0] / sr, max_duration_s)
    audio = to_mono_float32(audio)
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"silent (peak amplitude {peak:.1e} < {SILENCE_PEAK:.0e})")
    return audio, sr


def _check_duration(duration: float, max_duration_s: float | None) -> None:
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioError(
            f"too long: {duration:.1f} s > max_duration_s={max_duration_s:g} s; "
            "trim it or raise max_duration_s"
        )


def _decode(p: Path, ext: str, max_duration_s: float | None) -> tuple[np.ndarray, int]:

    error: Exception | None = None
    if ext in _SNDFILE_EXTENSIONS:
        try:
            info = sf.info(str(p))
            if info.samplerate > 0 and info.frames > 0:
                _check_duration(info.frames / info.samplerate, max_duration_s)
            audio, sr = sf.read(str(p), dtype="float32", always_2d=True)
            return audio, int(sr)
        except AudioError:
            raise
        except (RuntimeError, sf.LibsndfileError, ValueError, OSError) as exc:
            error = exc
    if ext in _FFMPEG_EXTENSIONS:
        try:
            return _decode_ffmpeg(p, max_duration_s)
        except AudioError:
            raise
        except Exception as exc:  # PyAV raises its own FFmpegError family and OSError
            # FFmpeg's reason ("Invalid data found") says more than libsndfile's
            # generic one when both refused the file.
            error = exc
    raise AudioError(
        f"cannot decode ({_short(error)}); the file is corrupt or its encoding is unsupported"
    )


def _decode_ffmpeg(p: Path, max_duration_s: float | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg (PyAV) to float32 frames x channels."""
    import av  # FFmpeg libraries: load on use

    with av.open(str(p), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioError("no audio stream in the file")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        if container.duration is not None and container.duration > 0:
            _check_duration(container.duration / av.time_base, max_duration_s)
        chunks: list[np.ndarray] = []
        sr = int(stream.codec_context.sample_rate or 0)
        n = 0
        limit = None if max_duration_s is None else max_duration_s + 1.0
        for frame in container.decode(stream):
            chunks.append(_frame_samples(frame))
            sr = frame.sample_rate or sr
            n += chunks[-1].shape[0]
            if limit is not None and sr and n > limit * sr:
                break  # a header without a duration: stop decoding once it is too long
    if not chunks:
        return np.zeros((0, 1), np.float32), sr
    return np.concatenate(chunks), sr


def _frame_samples(frame: Any) -> np.ndarray:
    """One decoded frame as float32 (samples, channels) in [-1, 1], as libsndfile returns.

    Converting in numpy rather than through FFmpeg's resampler makes decoding
    ~1.8x faster (60 s of stereo AAC: 0.45 s vs 0.82 s, best of 4, one run).
    """
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    a = a.T if frame.format.is_planar else a.reshape(-1, channels)
    if a.dtype == np.uint8:  # FFmpeg's only unsigned format: offset binary
        return (a.astype(np.float32) - 128.0) / 128.0
    if a.dtype.kind == "i":
        return a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1))
    return a.astype(np.float32, copy=False)


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no decoder"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:200]


# --------------------------------------------------------------------------- cache
def provenance_key(provenance: dict[str, Any]) -> str:
    """Short stable hash of a provenance dict (names the cache folder)."""
    blob = json.dumps(provenance, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class EmbeddingCache:
    """Embeddings by file content hash, one file per track, written as each is computed."""

    def __init__(self, root: Path | None, provenance: dict[str, Any]) -> None:
        self.dir: Path | None = None
        self.dim = int(provenance["dim"])
        if root is None:
            return
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(provenance["name"]))
        self.dir = Path(root) / f"{safe}-{provenance_key(provenance)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "provenance.json"
        if not meta.exists():
            write_text(meta, json.dumps(provenance, indent=2, sort_keys=True, default=str))

    def _path(self, sha: str) -> Path:
        assert self.dir is not None
        return self.dir / sha[:2] / f"{sha}.npy"

    def get(self, sha: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        path = self._path(sha)
        try:
            vec = np.load(path, allow_pickle=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return None
        if vec.shape != (self.dim,) or not np.isfinite(vec).all():
            log.warning("ignoring malformed cache entry %s", path)
            return None
        return vec.astype(np.float32, copy=False)

    def put(self, sha: str, vec: np.ndarray) -> None:
        if self.dir is None:
            return
        try:
            with atomic_file(self._path(sha), "wb") as fh:
                np.save(fh, vec, allow_pickle=False)
        except OSError as exc:  # a full disk must not fail the run
            log.warning("could not write cache entry for %s: %s", sha, exc)


# --------------------------------------------------------------------------- per file
# (vector, None, from_cache) on success, (None, reason, False) on failure
_Result = tuple[np.ndarray | None, str | None, bool]


def _embed_one(
    path: str,
    embedder: Embedder,
    cache: EmbeddingCache,
    max_duration_s: float | None,
    excerpts: Excerpts | None = None,
) -> _Result:
    """(vector, None, from_cache) or (None, reason, False); never raises Exception."""
    try:
        sha = None
        if cache.dir is not None:
            try:
                sha = audio_sha256(path)
            except FileNotFoundError:
                return None, "file not found", False
            except OSError as exc:
                return None, f"cannot read file: {exc.strerror or exc}", False
            hit = cache.get(sha)
            if hit is not None:
                return hit, None, True
        audio, sr = load_audio(path, max_duration_s=max_duration_s)
        if excerpts is not None:
            audio = excerpts.cut(audio, sr)
        vec = np.asarray(embedder.embed(audio, sr))
        if vec.shape != (embedder.dim,):
            shape_msg = f"returned shape {vec.shape}, expected ({embedder.dim},)"
            return None, f"embedder {embedder.name!r} {shape_msg}", False
        if not np.isfinite(vec).all():
            return None, f"embedder {embedder.name!r} returned NaN or inf", False
        vec = vec.astype(np.float32, copy=False)
        if sha is not None:
            cache.put(sha, vec)
        return vec, None, False
    except MoodshiftError as exc:
        return None, str(exc), False
    except MemoryError:
        return None, "out of memory while decoding or embedding this file", False
    except Exception as exc:  # one bad file must not stop a 10,000-file run
        log.debug("embedding %s failed", path, exc_info=True)
        return None, f"embedder error: {type(exc).__name__}: {_short(exc)}", False


# Worker-process state (spawned workers, so no state is inherited from the parent).
_W: dict[str, Any] = {}


def _worker_init(embedder_blob: bytes, cache_root: str | None, provenance: dict[str, Any],
                 max_duration_s: float | None, excerpts: Excerpts | None) -> None:  # fmt: skip
    with contextlib.suppress(ImportError):
        import torch  # torch is heavy: load on use

        # Parallelism comes from the processes; torch threads would oversubscribe.
        torch.set_num_threads(1)
    _W["embedder"] = pickle.loads(embedder_blob)
    _W["cache"] = EmbeddingCache(Path(cache_root) if cache_root else None, provenance)
    _W["max_duration_s"] = max_duration_s
    _W["excerpts"] = excerpts


def _worker_task(path: str) -> _Result:
    return _embed_one(path, _W["embedder"], _W["cache"], _W["max_duration_s"], _W["excerpts"])


# --------------------------------------------------------------------------- driver
def _resolve_embedder(embedder: Embedder | str) -> Embedder:
    if isinstance(embedder, Embedder):
        return embedder
    if isinstance(embedder, str):
        return get_embedder(embedder)
    raise InputError(
        f"embedder must be an Embedder or a registered name, got {type(embedder).__name__}"
    )


_CRASHED = (
    "worker process crashed on this file (out of memory, or the decoder or embedder "
    "crashed); try it alone with workers=None"
)


def _results_parallel(
    paths: list[str],
    emb: Embedder,
    cache_dir: Path | None,
    provenance: dict[str, Any],
    workers: int,
    max_duration_s: float | None,
    excerpts: Excerpts | None = None,
) -> Iterator[tuple[int, _Result]] | None:
    """Yield ``(index, result)`` as files finish in worker processes, or None if impossible.

    A worker that dies (segfault in a decoder, OOM kill) breaks the whole pool.
    The files that were in flight then become suspects and are retried one at
    a time in a fresh pool, so only the file that really kills a worker is
    reported, and the run goes on.
    """
    try:
        blob = pickle.dumps(emb)
    except Exception as exc:
        warnings.warn(
            f"embedder {emb.name!r} cannot be sent to worker processes ({exc}); "
            "embedding in this process instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return None

    initargs = (blob, str(cache_dir) if cache_dir else None, provenance, max_duration_s, excerpts)
    emb.warm_up()  # the workers then read compiled caches instead of racing to write them

    def gen() -> Iterator[tuple[int, _Result]]:
        pending = deque(range(len(paths)))
        suspects: deque[int] = deque()
        while pending or suspects:
            # spawn, not fork: forking a process that already runs torch/OpenMP
            # threads can deadlock. (Callers' scripts need the __main__ guard.)
            ex = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=mp.get_context("spawn"),
                initializer=_worker_init,
                initargs=initargs,
            )
            inflight: dict[Future[_Result], int] = {}
            solo: int | None = None  # the suspect running alone, if any
            finished = False
            try:
                while pending or suspects or inflight:
                    if solo is not None and inflight:
                        pass  # a suspect runs alone: wait for it
                    elif suspects:
                        solo = suspects.popleft()
                        inflight[ex.submit(_worker_task, paths[solo])] = solo
                    else:
                        # a short queue per worker keeps memory flat on 10,000 files
                        solo = None
                        while pending and len(inflight) < 2 * workers:
                            i = pending.popleft()
                            inflight[ex.submit(_worker_task, paths[i])] = i
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    lost: list[int] = []
                    for fut in done:
                        i = inflight.pop(fut)
                        try:
                            result = fut.result()
                        except BrokenProcessPool:
                            lost.append(i)
                            continue
                        yield i, result
                    if lost:
                        lost = sorted({*lost, *inflight.values()})
                        if lost == [solo]:
                            yield solo, (None, _CRASHED, False)
                        else:
                            suspects.extend(lost)
                        break  # the pool is unusable: start a fresh one
                finished = True
            finally:
                # Waiting lets the pool's manager thread exit cleanly; only an
                # interrupted run (generator closed, Ctrl-C) abandons the workers.
                ex.shutdown(wait=finished, cancel_futures=True)

    return gen()


def embed_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    embedder: Embedder | str,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    max_duration_s: float = 1200.0,
    progress: bool = True,
    standardize: bool = True,
    standardizer: Standardizer | None = None,
    excerpts: Excerpts | None = None,
) -> EmbeddingRun:
    """Embed audio files, skipping (and reporting) the ones that cannot be used.

    Parameters
    ----------
    paths : sequence of str or PathLike
        Audio files (see :data:`SUPPORTED_EXTENSIONS`).
    embedder : Embedder or str
        An embedder, or a name for :func:`~moodshift.audio.embedders.get_embedder`.
    cache_dir : str or PathLike, optional
        Folder for the embedding cache (created if needed); no caching if None.
    workers : int, optional
        Number of worker processes. None or 1 embeds in this process (torch
        still uses its intra-op threads: right for musicnn); more helps the
        single-threaded ``features`` embedder. The embedder must be picklable.
    max_duration_s : float, default 1200
        Longer files are reported as too long, not decoded.
    progress : bool, default True
        Show a tqdm progress bar.
    standardize : bool, default True
        For embedders with ``needs_standardization`` (``features``): z-score
        the rows, fitting mean/std on this run's rows unless ``standardizer``
        is given, and record it in ``provenance["standardizer"]``.
    standardizer : Standardizer, optional
        Reuse a catalogue's standardizer (for query files); see
        :meth:`Standardizer.from_provenance`.
    excerpts : Excerpts, optional
        Embed these windows of long tracks instead of the whole track; recorded
        as ``provenance["excerpts"]`` (a cache of its own).

    Returns
    -------
    EmbeddingRun
        ``embeddings`` (n_ok, dim) float32, ``ok_indices`` (n_ok,) int64,
        ``failures`` [(path, reason)], ``provenance``.

    Raises
    ------
    InputError
        Bad arguments (unknown embedder name, ``paths`` given as one string,
        ``workers`` < 1). Problems with individual files never raise.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InputError("paths must be a list of files, not a single path; wrap it in a list")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer or None, got {workers!r}")
    if max_duration_s is not None and max_duration_s <= 0:
        raise InputError(f"max_duration_s must be positive, got {max_duration_s}")
    emb = _resolve_embedder(embedder)
    provenance = emb.provenance()
    if excerpts is not None:
        provenance["excerpts"] = excerpts.to_dict()
    str_paths = [os.fspath(p) for p in paths]
    cache_root = Path(cache_dir) if cache_dir is not None else None
    cache = EmbeddingCache(cache_root, provenance)
    n = len(str_paths)

    results: Iterator[tuple[int, _Result]] | None = None
    if workers is not None and workers > 1 and n > 1:
        results = _results_parallel(
            str_paths, emb, cache_root, provenance, min(workers, n), max_duration_s, excerpts
        )
    if results is None:
        results = (
            (i, _embed_one(p, emb, cache, max_duration_s, excerpts))
            for i, p in enumerate(str_paths)
        )

    vectors: dict[int, np.ndarray] = {}
    reasons: dict[int, str] = {}
    n_cached = 0
    with tqdm(total=n, disable=not progress, unit="file", desc=f"embedding ({emb.name})",
              dynamic_ncols=True) as bar:  # fmt: skip
        for i, (vec, reason, cached) in results:
            if vec is None:
                reasons[i] = reason or "unknown error"
                log.info("skipped %s: %s", str_paths[i], reason)
            else:
                vectors[i] = vec
                n_cached += cached
            bar.update(1)
            if reasons:
                bar.set_postfix(skipped=len(reasons), refresh=False)

    ok = sorted(vectors)
    failures = [(str_paths[i], reasons[i]) for i in sorted(reasons)]
    x = (
        np.stack([vectors[i] for i in ok]).astype(np.float32)
        if ok
        else np.zeros((0, emb.dim), np.float32)
    )
    provenance = dict(provenance)
    if emb.needs_standardization:
        provenance["standardizer"] = None
    if emb.needs_standardization and standardize:
        if standardizer is None and len(ok) >= 2:
            standardizer = fit_standardizer(x)
        if standardizer is not None:
            x = standardizer.apply(x)
            provenance["standardizer"] = standardizer.to_dict()
        elif ok:
            warnings.warn(
                "only one file embedded: cannot fit a standardizer, returning raw "
                "features; pass standardizer= from the catalogue for query files",
                RuntimeWarning,
                stacklevel=2,
            )
    return EmbeddingRun(
        embeddings=x,
        ok_indices=np.asarray(ok, dtype=np.int64),
        failures=failures,
        provenance=provenance,
        n_cached=n_cached,
        n_total=n,
    )
