"""Build the default model shipped in ``src/moodshift/model/default/``, reproducibly.

Renders the built-in corpus twice (every genre, both GM soundfonts, the same
pieces): once by the shipped ``classic`` arranger and once by the ``wide``
arranger with audio augmentation; embeds both with musicnn (MSD, penultimate:
the default embedder), trains one model with its tagger on the two together,
fits the evidence fusion (tagger + musicnn's tag head + catalogue labels, fitted
out-of-genre) and writes the folder atomically with ``TRAINED_ON.json``.

    python scripts/make_default_model.py [--n 640] [--seed 0] [--work bench_out/default_model]

The same arguments give the same corpus, embeddings and model (training is
seeded; torch may still differ in the last bits across machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from moodshift._atomic import atomic_dir, write_text
from moodshift.audio.corpus import build_corpus, default_soundfonts
from moodshift.audio.embed import embed_catalog
from moodshift.data.catalog import concat_catalogs
from moodshift.model.default import DEFAULT_MODEL_DIR, TRAINED_ON
from moodshift.training.fusion import fit_model_evidence
from moodshift.training.train import TrainConfig, train

#: The shipped model must stay small (it is package data).
MAX_BYTES = 5_000_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=640, help="clips per render (default 640)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip-seconds", type=float, default=6.0)
    p.add_argument("--work", default="bench_out/default_model", help="corpus and cache folder")
    p.add_argument("--out", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    t0 = time.perf_counter()
    work = Path(a.work)
    fonts = default_soundfonts()
    parts, skipped = [], []
    for variety, augment, folder in (("classic", False, "corpus_classic"),
                                     ("wide", True, "corpus")):  # fmt: skip
        labels = build_corpus(work / folder, n=a.n, seed=a.seed, workers=a.workers,
                              clip_seconds=(a.clip_seconds, a.clip_seconds), soundfonts=fonts,
                              variety=variety, augment=augment)  # fmt: skip
        part, failures = embed_catalog(labels=labels, embedder="musicnn",
                                       cache_dir=work / "cache", workers=a.workers,
                                       seed=a.seed)  # fmt: skip
        parts.append(part)
        skipped.append(len(failures))
    cat = concat_catalogs(parts, prefixes=("classic_", "wide_"))
    cat.assign_split(seed=a.seed)
    model = train(cat, config=TrainConfig(seed=a.seed))
    model.evidence = fit_model_evidence(model, cat, seed=a.seed)
    epochs = len(model.log)
    model.log = []  # the per-epoch log is 50 kB the package does not need
    out = Path(a.out)
    genres = sorted(set(cat.labels["genre"]))
    info = {
        "summary": f"built-in corpus by the classic and the wide arranger (+ augmentation), "
        f"{len(cat)} clips, musicnn MSD",
        "command": f"python scripts/make_default_model.py --n {a.n} --seed {a.seed} "
        f"--clip-seconds {a.clip_seconds}",
        "corpus": {"clips": len(cat), "clip_seconds": a.clip_seconds,
                   "renders": [{"variety": "classic", "augment": False, "clips": len(parts[0]),
                                "skipped": skipped[0]},
                               {"variety": "wide", "augment": True, "clips": len(parts[1]),
                                "skipped": skipped[1]}],
                   "genres": genres,
                   "soundfonts": [f.stem for f in fonts], "seed": a.seed,
                   "moods": sorted(set(cat.labels["mood"]))},
        "embedder": model.embedder,
        "training": {"epochs_run": epochs, "config_seed": a.seed},
        "ranking_space": model.ranking.info if model.ranking is not None else {"kind": "none"},
        "tagger": model.tagger.report if model.tagger else None,
        "evidence": {"weights": model.evidence.weights, **model.evidence.report},
        "built_s": round(time.perf_counter() - t0, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }  # fmt: skip
    # One folder, swapped in whole: a model over the size limit leaves the shipped one as it was.
    with atomic_dir(out) as tmp:
        model.write_into(tmp)
        write_text(tmp / TRAINED_ON, json.dumps(info, indent=2, default=str) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)  # package data every user can read (temporary files are made 0600)
        size = sum(f.stat().st_size for f in tmp.iterdir())
        if size > MAX_BYTES:
            raise SystemExit(f"the default model is {size} bytes, over the {MAX_BYTES} limit")
    print(f"wrote {out} ({size / 1e6:.2f} MB) in {info['built_s']} s")


if __name__ == "__main__":
    main()
