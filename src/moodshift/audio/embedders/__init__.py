"""Audio embedders: whole track -> fixed-size vector, plus the batch pipeline.

Built-in embedders (see :func:`available_embedders`):

``musicnn`` (= ``musicnn-msd``)
    MusiCNN trained on the Million Song Dataset; by default the 200-d
    penultimate layer averaged over 3 s windows every 2 s. Options:
    ``output="penultimate" | "max_pool" | "mean_pool" | "tags"`` (200, 753,
    753, 50 dims), ``model="MSD_musicnn" | "MTT_musicnn"``. Pure PyTorch; the
    pretrained weights ship inside moodshift (``embedders/weights/``, ISC
    licence, converted from the ``musicnn`` 0.1.0 checkpoints).
``musicnn-mtt``
    The same network trained on MagnaTagATune.
``features``
    72 handcrafted librosa descriptors (MFCC, chroma, key/mode, tempo,
    loudness, spectral shape); z-scored per catalogue by :func:`embed_files`.

Heavy modules (torch, librosa) load on first use, not on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moodshift.audio.embedders.base import (
    Embedder,
    available_embedders,
    embedder_from_provenance,
    get_embedder,
    register_embedder,
    window_starts,
)
from moodshift.audio.embedders.features import FeaturesEmbedder
from moodshift.audio.embedders.pipeline import (
    SUPPORTED_EXTENSIONS,
    EmbeddingRun,
    embed_files,
    file_sha256,
    load_audio,
)
from moodshift.audio.embedders.standardize import Standardizer, fit_standardizer

if TYPE_CHECKING:
    from moodshift.audio.embedders.features import FeaturesEmbedder
    from moodshift.audio.embedders.musicnn import MusicnnEmbedder

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Embedder",
    "EmbeddingRun",
    "FeaturesEmbedder",
    "MusicnnEmbedder",
    "Standardizer",
    "available_embedders",
    "embed_files",
    "embedder_from_provenance",
    "file_sha256",
    "fit_standardizer",
    "get_embedder",
    "load_audio",
    "register_embedder",
    "window_starts",
]


def _musicnn(**kwargs: Any) -> Embedder:
    from moodshift.audio.embedders.musicnn import MusicnnEmbedder  # pulls in torch: load on use

    return MusicnnEmbedder(**kwargs)


def _musicnn_msd(**kwargs: Any) -> Embedder:
    return _musicnn(**{"model": "MSD_musicnn", **kwargs})


def _musicnn_mtt(**kwargs: Any) -> Embedder:
    return _musicnn(**{"model": "MTT_musicnn", **kwargs})


def _features(**kwargs: Any) -> Embedder:

    return FeaturesEmbedder(**kwargs)


register_embedder("musicnn", _musicnn, overwrite=True)
register_embedder("musicnn-msd", _musicnn_msd, overwrite=True)
register_embedder("musicnn-mtt", _musicnn_mtt, overwrite=True)
register_embedder("features", _features, overwrite=True)


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing moodshift.audio.embedders must not import torch.
    if name == "MusicnnEmbedder":
        from moodshift.audio.embedders.musicnn import MusicnnEmbedder  # pulls in torch: load on use

        return MusicnnEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
