"""Evidence benchmark: the query engine with labels and the tagger, at label fractions 1, 0.2, 0.

For each catalogue (synthetic with and without a mood x genre interaction; the
demo's rendered-audio catalogues when ``--demo`` points at a demo folder),
train the default model (or load the demo's), then on the test split:

- evaluate ``query_default`` (what ``moodshift query`` returns by default) and
  the baselines at label fractions F = 1, 0.2 and 0;
- check the goals:
  * F = 1: ``query_default`` reaches Mood P@1 >= 0.95 with Genre P@1, Inst J@1
    and CF@1 above ``oracle_top1``'s;
  * F = 0: ``query_default`` dominates ``tagger_filter`` (a point) and the
    curves of ``mood_shift``, ``centroid_interp`` and ``probe_direction``: the
    best Genre P@1 a curve reaches at a Mood P@1 at least ours is at most ours
    (and the tagger filter is no better on both and worse on one).

Everything is chosen on the validation split when training; the test split is
only scored. Writes ``<out>/evidence.json`` and ``<out>/evidence.md``. This is a
benchmark, not a test: it takes minutes.

Usage::

    python benchmarks/evidence.py OUT_DIR [--n 2000] [--dim 64] [--seed 0] [--epochs N]
                                         [--demo demo_out] [--no-synthetic]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from moodshift._atomic import write_text
from moodshift.data.catalog import Catalog
from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.evaluation.sweep import best_at_level, run_sweep
from moodshift.model.network import MoodshiftModel
from moodshift.synthetic import make_catalog
from moodshift.training.train import TrainConfig, train

FRACTIONS = (1.0, 0.2, 0.0)
METHODS = ("query_default", "tagger_filter", "mood_shift", "probe_direction", "oracle_top1")
KEYS = ("mood_p@1", "genre_p@1", "inst_j@1", "cf@1")


def _point(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (round(scores[k], 4) if k in scores else None) for k in KEYS}


def check_goals(tables: dict[float, dict[str, dict]], sweep0: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each with the margin by which it holds (or fails)."""
    t1, t0 = tables[1.0], tables[0.0]
    qd1, orc = t1["query_default"], t1["oracle_top1"]
    goals: dict[str, Any] = {"F=1": {"mood_p@1 >= 0.95": qd1["mood_p@1"] - 0.95}}
    for k in ("genre_p@1", "inst_j@1", "cf@1"):
        if qd1.get(k) is not None and orc.get(k) is not None:
            goals["F=1"][f"{k} above oracle_top1"] = qd1[k] - orc[k]
    qd0 = t0["query_default"]
    goals["F=0"] = {}
    tf = t0["tagger_filter"]
    goals["F=0"]["vs tagger_filter (mood, genre)"] = (
        qd0["mood_p@1"] - tf["mood_p@1"],
        qd0["genre_p@1"] - tf["genre_p@1"],
    )
    for name in ("mood_shift", "centroid_interp", "probe_direction"):
        best = best_at_level(sweep0[name]["curve"], level=qd0["mood_p@1"], metric="genre_p@1")
        # A curve that never reaches our mood keeps nothing there.
        goals["F=0"][f"genre over {name}'s curve at our mood"] = qd0["genre_p@1"] - (best or 0.0)
    return goals


def run_one(name: str, cat: Catalog, model: MoodshiftModel, *, seed: int) -> dict[str, Any]:
    tables: dict[float, dict[str, dict]] = {}
    for frac in FRACTIONS:
        rep = evaluate_catalog(cat, model=model, seed=seed, label_fraction=frac, methods=METHODS)
        tables[frac] = {m: _point(s) for m, s in rep.methods.items()}
    sweep0 = run_sweep(cat, model=model, seed=seed, label_fraction=0.0, progress=False)
    return {
        "catalogue": name,
        "n_tracks": len(cat),
        "tagger": model.tagger.report if model.tagger is not None else None,
        "evidence_settings": model.config.get("evidence"),
        "tables": {str(f): t for f, t in tables.items()},
        "goals": check_goals(tables, sweep0),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# Evidence benchmark (test split; everything chosen on validation)", ""]
    for r in results:
        lines += [f"## {r['catalogue']} ({r['n_tracks']} tracks)", ""]
        t = r["tagger"] or {}
        if t:
            lines.append(f"Tagger: validation accuracy {t.get('val_accuracy', float('nan')):.3f}, "
                         f"ECE {t.get('val_ece', float('nan')):.3f} "
                         f"(before temperature scaling {t.get('val_ece_raw', float('nan')):.3f}). "
                         f"Settings: {r['evidence_settings']}.")  # fmt: skip
            lines.append("")
        lines += ["| F | method | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
        for frac, table in r["tables"].items():
            for m, s in table.items():
                vals = " | ".join("-" if s[k] is None else f"{s[k]:.3f}" for k in KEYS)
                lines.append(f"| {frac} | {m} | {vals} |")
        lines += ["", "Goals (positive margin: reached):", ""]
        for regime, goals in r["goals"].items():
            for g, v in goals.items():
                text = ", ".join(f"{x:+.3f}" for x in v) if isinstance(v, tuple | list) else (
                    f"{v:+.3f}")  # fmt: skip
                lines.append(f"- {regime}: {g}: {text}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--demo", help="a demo folder (catalog_<embedder>/, model_<embedder>/)")
    ap.add_argument("--no-synthetic", action="store_true", help="only the demo catalogues")
    a = ap.parse_args()
    out = Path(a.out)
    results = []
    t_start = time.perf_counter()
    synthetic = (
        ()
        if a.no_synthetic
        else (("synthetic, interaction", True), ("synthetic, no interaction", False))
    )
    for name, inter in synthetic:
        cat = make_catalog(n=a.n, dim=a.dim, groups=True, seed=a.seed, interaction=inter)
        cfg = TrainConfig(seed=a.seed, **({"epochs": a.epochs} if a.epochs else {}))
        model = train(cat, config=cfg, progress=True)
        results.append(run_one(name, cat, model, seed=a.seed))
        print(markdown(results[-1:]), flush=True)
    if a.demo:
        for folder in sorted(Path(a.demo).glob("catalog_*")):
            emb = folder.name.removeprefix("catalog_")
            model_dir = Path(a.demo) / f"model_{emb}"
            if not model_dir.is_dir():
                continue
            cat, model = Catalog.load(folder), MoodshiftModel.load(model_dir)
            results.append(run_one(f"demo audio, {emb}", cat, model, seed=a.seed))
            print(markdown(results[-1:]), flush=True)
    meta = {"seconds": round(time.perf_counter() - t_start, 1), "python": platform.python_version(),
            "args": vars(a)}  # fmt: skip
    write_text(out / "evidence.json", json.dumps({"meta": meta, "results": results}, indent=2))
    write_text(out / "evidence.md", markdown(results))
    print(f"wrote {out / 'evidence.json'} and {out / 'evidence.md'}")


if __name__ == "__main__":
    main()
