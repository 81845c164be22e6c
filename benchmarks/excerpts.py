"""What analysing excerpts of long tracks costs, against whole tracks.

Embeds every file of a rendered corpus twice (whole, and ``n`` windows of
``seconds`` spread over it), times both, and compares on the corpus's labels:

- tagger accuracy: a linear (logistic) tagger of mood, 4-fold cross-validated
  with the folds split by melody group, so no melody is in both train and test;
- retrieval: mood and genre P@1 of the nearest other track (same melody group
  excluded), as the engine's neighbourhoods see them;
- agreement: mean cosine between a track's excerpt and whole embeddings, and how
  often a track's excerpt embedding has its own whole embedding as nearest neighbour.

Usage (the figures in docs/library.md come from this command)::

    moodshift corpus --out corpus_long --n 96 --seed 3 --clip-seconds 120 200
    python benchmarks/excerpts.py --corpus corpus_long --cache excerpt_cache
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _embed(paths: list[Path], *, embedder: str, cache: Path, excerpts: Any) -> tuple[Any, float]:
    from moodshift.audio.embedders.pipeline import embed_files

    t0 = time.perf_counter()
    run = embed_files(paths, embedder=embedder, cache_dir=cache, excerpts=excerpts,
                      standardize=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    if run.failures:
        raise SystemExit(f"{len(run.failures)} files failed: {run.failures[:2]}")
    return run, seconds / max(len(paths) - run.n_cached, 1)


def _scores(x: np.ndarray, labels: pd.DataFrame) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mood, genre, group = (labels[c].to_numpy() for c in ("mood", "genre", "group"))
    pred = np.empty_like(mood)
    for tr, te in GroupKFold(n_splits=4).split(x, mood, group):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        pred[te] = clf.fit(x[tr], mood[tr]).predict(x[te])
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = u @ u.T
    sim[group[:, None] == group[None, :]] = -np.inf  # itself and its own melody
    nn = sim.argmax(axis=1)
    return {
        "tagger_accuracy": float((pred == mood).mean()),
        "mood_p_at_1": float((mood[nn] == mood).mean()),
        "genre_p_at_1": float((genre[nn] == genre).mean()),
    }


def main() -> None:
    from moodshift.audio.embedders.pipeline import Excerpts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="a folder made by `moodshift corpus`")
    ap.add_argument("--embedder", default="musicnn")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--cache", required=True, help="embedding cache (re-runs only re-score)")
    ap.add_argument("--out", help="also write the figures as JSON here")
    a = ap.parse_args()
    corpus = Path(a.corpus)
    labels = pd.read_csv(corpus / "labels.csv")
    paths = [corpus / p for p in labels["audio_path"]]
    whole, t_whole = _embed(paths, embedder=a.embedder, cache=Path(a.cache), excerpts=None)
    ex = Excerpts(n=a.n, seconds=a.seconds)
    part, t_part = _embed(paths, embedder=a.embedder, cache=Path(a.cache), excerpts=ex)
    xw, xe = whole.embeddings, part.embeddings
    uw = xw / np.linalg.norm(xw, axis=1, keepdims=True)
    ue = xe / np.linalg.norm(xe, axis=1, keepdims=True)
    durations = labels["meta_duration"].astype(float)
    result = {
        "tracks": len(labels),
        "duration_s": {
            "mean": float(durations.mean()),
            "min": float(durations.min()),
            "max": float(durations.max()),
        },
        "embedder": a.embedder,
        "excerpts": ex.to_dict(),
        "seconds_per_track": {"whole": t_whole, "excerpts": t_part},
        "whole": _scores(xw, labels),
        "excerpts_scores": _scores(xe, labels),
        "cosine_whole_vs_excerpts": float((uw * ue).sum(axis=1).mean()),
        "own_track_is_nearest": float(((ue @ uw.T).argmax(axis=1) == np.arange(len(ue))).mean()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
