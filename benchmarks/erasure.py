"""Quality benchmark: the default query against concept erasure, on several catalogues.

Concept erasure (remove the mood subspace from the seed and the tracks, keep the
target mood's tracks, rank by cosine) is the strongest training-free baseline this
project has measured. For each catalogue this trains the default configuration
(``TrainConfig()``, what ``moodshift train`` runs) and evaluates on the test split,
in one run:

- with every label visible (F = 1): ``query_default`` against ``oracle_top1`` (the
  label filter), ``erasure_label`` and ``leace_label``;
- with none (F = 0): ``query_default`` against ``tagger_filter``,
  ``erasure_tagger`` and ``leace_tagger``.

Catalogues: the two synthetic ones of ``benchmarks/quality.py`` (a mood x genre
interaction, and none), and, when given, saved catalogues such as the demo's
(``demo_out/catalog_musicnn``, ``demo_out/catalog_features``). Each is run twice: as
it is, and with its counterfactual groups hidden from training (the ``group`` column
emptied on the training and validation splits, kept on the test split for CF@k), as a
catalogue without such groups would train: the learned ranking space then learns from
cross-mood mutual nearest neighbours.

Writes ``<out>/erasure.json`` and ``<out>/erasure.md`` (Mood P@1, Genre P@1,
Instrument J@1, CF@1, CF@10 per row, and which ranking space training chose).
This is a benchmark, not a test: it takes minutes.

Usage::

    python benchmarks/erasure.py OUT_DIR [--catalog demo_out/catalog_musicnn ...] [--n 3000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from moodshift._atomic import write_text
from moodshift.bench.core import load_avg
from moodshift.data.catalog import Catalog
from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.synthetic import make_catalog
from moodshift.training.train import TrainConfig, train

LABELLED = ("query_default", "oracle_top1", "erasure_label", "leace_label")
UNLABELLED = ("query_default", "tagger_filter", "erasure_tagger", "leace_tagger")
COLUMNS = ("mood_p@1", "genre_p@1", "inst_j@1", "cf@1", "cf@10")
SYNTHETIC = {"synthetic_interaction": True, "synthetic_no_interaction": False}


def hide_training_groups(cat: Catalog) -> Catalog:
    """A copy whose ``group`` column is empty outside the test split."""
    out = cat.subset(np.arange(len(cat)))
    labels = out.labels.copy()
    seen = np.concatenate([out.split_indices("train"), out.split_indices("val")])
    labels.loc[labels.index[seen], "group"] = ""
    out.labels = labels
    return out


def run_one(cat: Catalog, *, seed: int) -> dict[str, Any]:
    """Train the default model on ``cat`` and evaluate both regimes on its test split."""
    t0 = time.perf_counter()
    model = train(cat, config=TrainConfig(seed=seed), progress=False)
    train_s = time.perf_counter() - t0
    f1 = evaluate_catalog(cat, model=model, seed=seed, methods=LABELLED)
    f0 = evaluate_catalog(cat, model=model, seed=seed, methods=UNLABELLED, label_fraction=0.0)
    return {
        "n_queries": f1.n_queries,
        "train_seconds": round(train_s, 1),
        "ranking_space": model.ranking.info if model.ranking is not None else {"kind": "none"},
        "evidence": model.config.get("evidence"),
        "F=1": {m: {c: f1.methods[m].get(c) for c in COLUMNS} for m in LABELLED},
        "F=0": {m: {c: f0.methods[m].get(c) for c in COLUMNS} for m in UNLABELLED},
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine']}; load average {results['load']}.", ""]
    for name, r in results["catalogues"].items():
        space = ", ".join(f"{k} {v}" for k, v in r["ranking_space"].items())
        lines += [f"### {name} ({r['n_queries']} test queries; ranking space: {space})", "",
                  "| regime | method | " + " | ".join(COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]  # fmt: skip
        for regime in ("F=1", "F=0"):
            for method, s in r[regime].items():
                vals = " | ".join("-" if s[c] is None else f"{s[c]:.3f}" for c in COLUMNS)
                lines.append(f"| {regime} | {method} | {vals} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--catalog", action="append", default=[], help="a saved catalogue folder")
    ap.add_argument("--n", type=int, default=3000, help="tracks of each synthetic catalogue")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor()}".strip(),
                               "load": load_avg(), "catalogues": {}}  # fmt: skip
    catalogues = {
        name: make_catalog(n=a.n, dim=a.dim, groups=True, seed=a.seed, interaction=interaction)
        for name, interaction in SYNTHETIC.items()
    } | {Path(path).name: Catalog.load(path) for path in a.catalog}
    for name, cat in catalogues.items():
        results["catalogues"][name] = run_one(cat, seed=a.seed)
        results["catalogues"][f"{name}, groups hidden from training"] = run_one(
            hide_training_groups(cat), seed=a.seed
        )
        print(name, "done", flush=True)
    write_text(out / "erasure.json", json.dumps(results, indent=2))
    write_text(out / "erasure.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
