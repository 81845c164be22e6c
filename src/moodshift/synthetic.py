"""Synthetic catalogues with known latent factors, for tests and benchmarks.

Each track mixes a genre factor, a mood factor, instrument factors, an artist
factor and noise, pushed through a random two-layer non-linear map to ``dim``
dimensions. With ``interaction=True`` the mood's direction depends on the
genre (mood x genre), so one global mood shift cannot be right for every
genre. With ``groups=True`` every (artist, genre, instruments, base noise)
combination appears in every mood under one ``group`` id, so the true
"same piece in the target mood" is known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from moodshift.data.catalog import Catalog

MOODS = ("energetic", "calm", "happy", "sad")


def make_catalog(
    *,
    n: int = 2000,
    dim: int = 64,
    n_moods: int = 4,
    n_genres: int = 6,
    n_instruments: int = 8,
    n_artists: int | None = None,
    latent: int = 32,
    mood_scale: float = 1.0,
    genre_scale: float = 1.5,
    instrument_scale: float = 0.6,
    artist_scale: float = 0.5,
    noise: float = 0.5,
    interaction: bool = False,
    groups: bool = False,
    seed: int = 0,
    split: bool = True,
) -> Catalog:
    """A labelled catalogue of ``n`` tracks (see module docstring).

    Parameters
    ----------
    n, dim : int
        Tracks and embedding dimension: embeddings of shape (n, dim).
    n_moods, n_genres, n_instruments : int
        Label vocabulary sizes (moods are named after :data:`MOODS` up to 4).
    n_artists : int, optional
        Default ``max(4, n // 25)``.
    latent : int
        Width of the latent space the factors live in.
    mood_scale, genre_scale, instrument_scale, artist_scale, noise : float
        Weight of each factor in the latent mix: how strongly each label shows
        in the embedding.
    interaction : bool
        Make the mood's direction depend on the genre.
    groups : bool
        Add a ``group`` column: one piece in every mood.
    seed : int
    split : bool
        Store a train/val/test split.

    Returns
    -------
    Catalog
        Labels ``track_id, mood, genre, instruments, artist`` (+ ``group``), a
        stored split (artist-disjoint, stratified by mood), provenance name
        ``synthetic``.
    """
    rng = np.random.default_rng(seed)
    moods = list(MOODS[:n_moods]) if n_moods <= len(MOODS) else [f"mood{i}" for i in range(n_moods)]
    n_artists = n_artists or max(4, n // 25)

    def unit(*shape: int) -> np.ndarray:
        v = rng.standard_normal(shape)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    genre_vec = unit(n_genres, latent)
    mood_vec = unit(n_genres if interaction else 1, n_moods, latent)
    inst_vec = unit(n_instruments, latent)
    artist_vec = unit(n_artists, latent)
    w1 = rng.standard_normal((latent, 2 * latent)) / np.sqrt(latent)
    w2 = rng.standard_normal((2 * latent, dim)) / np.sqrt(2 * latent)
    artist_genre = rng.integers(n_genres, size=n_artists)

    per = n_moods if groups else 1
    n_base = -(-n // per)
    artist = rng.integers(n_artists, size=n_base)
    # Artists mostly stick to one genre, as real ones do.
    genre = np.where(rng.random(n_base) < 0.8, artist_genre[artist],
                     rng.integers(n_genres, size=n_base))  # fmt: skip
    n_inst = rng.integers(1, 4, size=n_base)
    inst = [rng.choice(n_instruments, size=c, replace=False) for c in n_inst]
    base_noise = rng.standard_normal((n_base, latent)) * noise / np.sqrt(latent) * 4
    rows = []
    z = []
    for b in range(n_base):
        mood_ids = rng.permutation(n_moods)[:per] if groups else [rng.integers(n_moods)]
        for m in mood_ids:
            mv = mood_vec[genre[b] if interaction else 0, m]
            zi = (genre_scale * genre_vec[genre[b]] + mood_scale * mv
                  + instrument_scale * inst_vec[inst[b]].sum(axis=0)
                  + artist_scale * artist_vec[artist[b]] + base_noise[b]
                  + rng.standard_normal(latent) * noise / np.sqrt(latent))  # fmt: skip
            z.append(zi)
            rows.append({
                "track_id": f"syn_{len(rows):06d}",
                "mood": moods[m],
                "genre": f"genre{genre[b]}",
                "instruments": "|".join(sorted(f"inst{i}" for i in inst[b])),
                "artist": f"artist{artist[b]:04d}",
                **({"group": f"grp{b:05d}"} if groups else {}),
            })  # fmt: skip
    zz = np.stack(z)[:n]
    x = np.tanh(np.maximum(zz @ w1, 0) @ w2 + 0.1 * rng.standard_normal((zz.shape[0], dim)))
    cat = Catalog(
        embeddings=x.astype(np.float32), labels=pd.DataFrame(rows[:n]),
        provenance={"name": "synthetic", "version": "1", "dim": dim,
                    "params": {"interaction": interaction, "seed": seed, "noise": noise}},
    )  # fmt: skip
    if split:
        cat.assign_split(attribute="mood", seed=seed)
    return cat
