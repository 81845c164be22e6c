"""From labelled audio files to a catalogue: the ``moodshift embed`` stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moodshift.audio.embedders.pipeline import embed_files
from moodshift.audio.ray_embed import ray_embed_files
from moodshift.data.catalog import Catalog, read_labels
from moodshift.errors import DataError, InputError


def _audio_paths(df, *, root: Path, audio_dir: Path | None) -> list[Path]:
    if "audio_path" in df.columns and (df["audio_path"].astype(str) != "").all():
        return [Path(p) if Path(p).is_absolute() else root / p for p in df["audio_path"]]
    if audio_dir is None:
        raise InputError(
            "the labels have no audio_path column; add one (paths relative to the CSV) or give "
            "--audio-dir with files named <track_id>.<ext>."
        )
    by_stem = {p.stem: p for p in sorted(audio_dir.iterdir()) if p.is_file()}
    missing = [t for t in df["track_id"].astype(str) if t not in by_stem]
    if missing:
        raise DataError(
            f"{len(missing)} tracks have no file in {audio_dir} (e.g. {missing[:3]}); name files "
            f"<track_id>.<ext> or add an audio_path column."
        )
    return [by_stem[t] for t in df["track_id"].astype(str)]


def embed_catalog(
    *,
    labels: str | Path | None = None,
    audio_dir: str | Path | None = None,
    embedder: str = "musicnn",
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    attribute: str = "mood",
    seed: int = 0,
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
) -> tuple[Catalog, list[tuple[str, str]]]:
    """Embed every labelled audio file and build a catalogue with a stored split.

    Parameters
    ----------
    labels : path
        Labels CSV/Parquet (``track_id, mood, genre, instruments[, artist, audio_path]``);
        ``audio_path`` is relative to the file's folder. Default: ``labels.csv`` in
        ``audio_dir``.
    audio_dir : path, optional
        Folder of ``<track_id>.<ext>`` files when the labels have no ``audio_path``.
    embedder : str
        A registered embedder (:func:`moodshift.audio.embedders.available_embedders`).
    cache_dir : path, optional
        Embedding cache keyed by file content; default ``<labels folder>/.embed_cache``.
    engine : {"local", "ray"}
        Embed in this process (``workers`` processes) or as Ray Data batch inference.
    ray_address : str, optional
        Existing Ray cluster for ``engine="ray"`` (default: start a local one).

    Returns
    -------
    catalog : Catalog
        Only the files that embedded; provenance records the embedder.
    failures : list of (path, reason)
        Files skipped (corrupt, empty, silent, unsupported, too long).
    """

    if labels is None:
        if audio_dir is None:
            raise InputError("give --labels (a CSV with audio_path) or --audio-dir.")
        labels = Path(audio_dir) / "labels.csv"
        if not labels.is_file():
            raise InputError(
                f"{audio_dir} has no labels.csv; moods are needed to train: give --labels."
            )
    labels = Path(labels)
    df = read_labels(labels).fillna("").astype(str)
    if "track_id" not in df.columns or attribute not in df.columns:
        raise DataError(
            f"{labels} needs track_id and {attribute} columns (has {list(df.columns)})."
        )
    root = labels.resolve().parent
    paths = _audio_paths(df, root=root, audio_dir=Path(audio_dir) if audio_dir else None)
    cache = Path(cache_dir) if cache_dir else root / ".embed_cache"
    if engine == "ray":  # Ray Data batch inference (moodshift.audio.ray_embed)
        run = ray_embed_files(paths, embedder=embedder, cache_dir=cache, workers=workers,
                              address=ray_address, progress=progress)  # fmt: skip
    else:
        run = embed_files(paths, embedder=embedder, cache_dir=cache, workers=workers,
                          progress=progress)  # fmt: skip
    if len(run.ok_indices) == 0:
        raise DataError(
            f"no file could be embedded ({len(run.failures)} failed; first: {run.failures[:1]})."
        )
    kept = df.iloc[np.asarray(run.ok_indices)].reset_index(drop=True)
    provenance = dict(run.provenance)
    provenance["skipped_files"] = len(run.failures)
    cat = Catalog(embeddings=run.embeddings, labels=kept, provenance=provenance, root=root)
    cat.assign_split(attribute=attribute, seed=seed)
    return cat, run.failures
