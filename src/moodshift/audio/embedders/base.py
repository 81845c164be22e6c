"""The embedder plug-in interface, its registry and the shared window/resample helpers.

An :class:`Embedder` turns one whole track (mono float audio at any sample
rate) into one fixed-size float32 vector. Embedders are looked up by name, so
catalogues, models and the CLI only ever store a name and a provenance dict::

    from moodshift.audio.embedders import get_embedder
    emb = get_embedder("musicnn")              # MSD_musicnn penultimate layer, 200-d
    vec = emb.embed(audio, sr)                 # (200,) float32

Third-party embedders register a factory under a new name with
:func:`register_embedder`; :func:`moodshift.audio.embedders.embed_files` then
accepts that name.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from moodshift.errors import AudioError, EmbedderMismatchError, InputError

__all__ = [
    "Embedder",
    "available_embedders",
    "embedder_from_provenance",
    "get_embedder",
    "register_embedder",
    "resample",
    "to_mono_float32",
    "window_starts",
]


class Embedder(abc.ABC):
    """A whole-track audio embedder.

    Subclasses set the four class (or instance) attributes and implement
    :meth:`embed`. ``version`` must change whenever outputs change (new
    weights, new preprocessing), because cached embeddings are keyed by
    :meth:`provenance`.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"musicnn-msd"``.
    version : str
        Version of the embedding recipe (not of moodshift).
    dim : int
        Length of the vectors :meth:`embed` returns.
    sample_rate : int
        Sample rate the model works at; :meth:`embed` resamples to it.
    needs_standardization : bool
        Whether dimensions have unrelated units (Hz, dB, BPM...) and should be
        z-scored over a catalogue before distances mean anything.
        :func:`~moodshift.audio.embedders.embed_files` does so when this is true.
    """

    name: str
    version: str
    dim: int
    sample_rate: int
    needs_standardization: bool = False

    @abc.abstractmethod
    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Embed one whole track.

        Parameters
        ----------
        audio : ndarray, shape (n_samples,)
            Mono audio, floats in about [-1, 1], at sample rate ``sr``.
        sr : int
            Sample rate of ``audio`` in Hz.

        Returns
        -------
        ndarray, shape (dim,), float32
        """

    def warm_up(self) -> None:
        """Compile or load what the first :meth:`embed` call would, before workers start.

        The default does nothing. Embedders whose first call writes a shared
        cache (numba's, under librosa) override it: the driver calls it once
        before starting worker processes, so the workers only read that cache.
        Several processes compiling the same function at once can leave a cache
        entry that crashes every later process that loads it (seen with
        librosa's cached numba functions as a segmentation fault).
        """
        return None

    def provenance(self) -> dict[str, Any]:
        """What made these embeddings: enough to refuse mixing incompatible ones.

        Returns
        -------
        dict
            At least ``name``, ``version`` and ``dim``; subclasses add their
            options (JSON-serialisable values only).
        """
        return {"name": self.name, "version": self.version, "dim": int(self.dim)}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.provenance().items() if k != "name")
        return f"{type(self).__name__}({self.name!r}, {opts})"


# --------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., Embedder]] = {}
_LOCK = threading.Lock()


def register_embedder(
    name: str, factory: Callable[..., Embedder], *, overwrite: bool = False
) -> None:
    """Make ``get_embedder(name, **kwargs)`` call ``factory(**kwargs)``.

    Parameters
    ----------
    name : str
        Registry name (case-sensitive, no surrounding spaces).
    factory : callable
        Returns an :class:`Embedder`; usually the class itself or a
        ``functools.partial`` fixing some options.
    overwrite : bool, default False
        Replace an existing registration instead of raising.

    Raises
    ------
    InputError
        ``name`` is empty or already registered (without ``overwrite``), or
        ``factory`` is not callable.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"embedder name must be a non-empty string without spaces, got {name!r}")
    if not callable(factory):
        raise InputError(f"embedder factory for {name!r} must be callable, got {factory!r}")
    with _LOCK:
        if name in _REGISTRY and not overwrite:
            raise InputError(
                f"an embedder called {name!r} is already registered; pick another name "
                "or pass overwrite=True"
            )
        _REGISTRY[name] = factory


def available_embedders() -> list[str]:
    """Registered embedder names, sorted."""
    with _LOCK:
        return sorted(_REGISTRY)


def get_embedder(name: str, **kwargs: Any) -> Embedder:
    """Build the embedder registered as ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`available_embedders`.
    **kwargs
        Options passed to the factory (e.g. ``output="tags"`` for musicnn).

    Returns
    -------
    Embedder

    Raises
    ------
    InputError
        Unknown name (the message lists the known ones) or bad options.
    """
    with _LOCK:
        factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(available_embedders()) or "none"
        raise InputError(f"unknown embedder {name!r}; known embedders: {known}")
    try:
        emb = factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"bad options for embedder {name!r}: {exc}") from exc
    if not isinstance(emb, Embedder):
        raise InputError(
            f"the factory registered as {name!r} returned {type(emb).__name__}, not an Embedder"
        )
    return emb


# --------------------------------------------------------------------------- helpers
def to_mono_float32(audio: np.ndarray) -> np.ndarray:
    """Validate audio and return it as a contiguous mono float32 array.

    Parameters
    ----------
    audio : ndarray, shape (n,) or (n, channels)
        Channels-last, as soundfile returns them; channels are averaged.

    Returns
    -------
    ndarray, shape (n,), float32

    Raises
    ------
    AudioError
        Empty, more than two dimensions, or non-finite samples.
    """
    a = np.asarray(audio)
    if a.ndim == 2:
        a = a.mean(axis=1)
    if a.ndim != 1:
        raise AudioError(
            f"audio must have shape (n,) or (n, channels), got {a.shape}; pass mono samples"
        )
    if a.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if not np.issubdtype(a.dtype, np.floating):
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float32) / float(-np.iinfo(a.dtype).min)
        else:
            raise AudioError(f"audio must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise AudioError("audio contains NaN or infinite samples; the file is probably corrupt")
    return a


def resample(audio: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono audio with soxr (librosa's default, as musicnn's own loader uses).

    Parameters
    ----------
    audio : ndarray, shape (n,)
    orig_sr, target_sr : int
        Sample rates in Hz.

    Returns
    -------
    ndarray, shape (round(n * target_sr / orig_sr),), float32
    """
    if orig_sr <= 0:
        raise AudioError(f"invalid sample rate {orig_sr} Hz")
    if orig_sr == target_sr:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import librosa  # heavy import, only when needed

    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(
        np.float32, copy=False
    )


def window_starts(
    n_samples: int,
    *,
    win: int,
    hop: int,
    min_tail: int | None = None,
) -> np.ndarray:
    """Start offsets of the analysis windows that cover a track.

    Windows of ``win`` samples start every ``hop`` samples while they fit in
    the track. If the part after the last full window is at least
    ``min_tail`` samples long (default: half a hop), one more window aligned
    with the end of the track covers it, so no second or more of music is
    ignored and no window is padded with artificial silence. A track shorter
    than one window gets a single window at 0 (the caller zero-pads it).

    With 3 s windows and a 2 s hop: 7 s -> starts 0, 2, 4 s (3 windows);
    8 s -> 0, 2, 4, 5 s; 7.5 s -> 0, 2, 4 s (the 0.5 s tail is dropped).

    Parameters
    ----------
    n_samples : int
        Track length.
    win, hop : int
        Window length and hop, in samples (or frames: any unit works).
    min_tail : int, optional
        Shortest uncovered tail that earns an end-aligned window.

    Returns
    -------
    ndarray, shape (n_windows,), int64
    """
    if win <= 0 or hop <= 0:
        raise InputError(f"window length and hop must be positive, got win={win}, hop={hop}")
    if min_tail is None:
        min_tail = hop // 2
    if n_samples <= win:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - win + 1, hop, dtype=np.int64)
    tail = n_samples - (int(starts[-1]) + win)
    if tail >= max(1, min_tail):
        starts = np.append(starts, n_samples - win)
    return starts


def embedder_from_provenance(provenance: dict[str, Any]) -> Embedder:
    """Rebuild the embedder that produced embeddings with this provenance.

    Parameters
    ----------
    provenance : dict
        As returned by :meth:`Embedder.provenance` (or stored by a catalogue):
        ``name``, ``version``, ``dim`` and optionally ``options``.

    Returns
    -------
    Embedder

    Raises
    ------
    EmbedderMismatchError
        The installed embedder of that name has another version or dimension,
        so new embeddings would not be comparable with the stored ones.
    """
    try:
        name = provenance["name"]
    except (KeyError, TypeError):
        raise InputError(f"provenance {provenance!r} has no embedder 'name'") from None
    emb = get_embedder(name, **dict(provenance.get("options") or {}))
    mine = emb.provenance()
    for key in ("version", "dim"):
        if key in provenance and provenance[key] != mine[key]:
            raise EmbedderMismatchError(
                f"embeddings were made by {name!r} {key} {provenance[key]!r}, but the installed "
                f"one has {key} {mine[key]!r}; re-embed the catalogue"
            )
    return emb
