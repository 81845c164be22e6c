"""Quality benchmark: does the default model's trade-off curve dominate the baselines'?

For each synthetic catalogue (mood x genre interaction, and none), train the
default configuration (``TrainConfig()``, the one ``moodshift train`` uses),
sweep every method on the test split (:func:`moodshift.evaluation.sweep.run_sweep`) and
report:

- whether the model's curve dominates the centroid shift's and the centroid
  interpolation's: at every Mood P@1 level 0.80, 0.81, ..., 0.95 it keeps at
  least as much Genre P@1 (best reached at that level, interpolated along the
  curve; a curve that never reaches a level keeps nothing there), and strictly
  more at one level at least;
- whether at Mood P@1 >= 0.95 its Genre P@1 reaches Oracle Top-1's.

Writes ``<out>/quality.json``, and per catalogue ``<out>/<name>/sweep.json``
with the sweep plots. This is a benchmark, not a test: it takes minutes.

Usage::

    python benchmarks/quality.py OUT_DIR [--n 3000] [--dim 64] [--seed 0] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moodshift._atomic import write_text
from moodshift.evaluation.sweep import dominates, level_key, plot_sweep, run_sweep
from moodshift.synthetic import make_catalog
from moodshift.training.train import TrainConfig, train

LEVELS = tuple(np.round(np.arange(0.80, 0.951, 0.01), 4).tolist())
CATALOGUES = {"interaction": {"interaction": True}, "no_interaction": {"interaction": False}}


def run_one(
    name: str, *, out: Path, n: int, dim: int, seed: int, epochs: int | None
) -> dict[str, Any]:
    """Train the default model on one synthetic catalogue, sweep it, compare the curves."""
    cat = make_catalog(n=n, dim=dim, groups=True, seed=seed, **CATALOGUES[name])
    cfg = TrainConfig(seed=seed) if epochs is None else TrainConfig(seed=seed, epochs=epochs)
    t0 = time.perf_counter()
    model = train(cat, config=cfg, progress=True)
    train_s = time.perf_counter() - t0
    sweep = run_sweep(cat, model=model, part="test", seed=seed)
    folder = out / name
    write_text(folder / "sweep.json", json.dumps(sweep, indent=2))
    plots = plot_sweep(sweep, out_dir=folder)
    g95 = level_key("genre_p@1", 0.95)
    model_95, oracle_95 = sweep["model"][g95], sweep["oracle_top1"][g95]
    return {
        "catalogue": {"n": n, "dim": dim, "seed": seed, "groups": True, **CATALOGUES[name]},
        "train_seconds": round(train_s, 1),
        "best_epoch": model.config["training"]["best_epoch"],
        "default_strength": model.default_strength,
        "config": {k: v for k, v in model.config.items() if k != "training"},
        "at_level": {m: {k: v for k, v in e.items() if k != "curve"} for m, e in sweep.items()},
        "dominates_mood_shift": dominates(sweep, other="mood_shift", levels=LEVELS),
        "dominates_centroid_interp": dominates(sweep, other="centroid_interp", levels=LEVELS),
        "reaches_oracle_top1_at_0.95": (
            model_95 is not None and oracle_95 is not None and model_95 >= oracle_95
        ),
        "plots": [str(p) for p in plots],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for quality.json, sweeps and plots")
    parser.add_argument("--n", type=int, default=3000, help="tracks per catalogue")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the default epochs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--only", choices=sorted(CATALOGUES), help="run one catalogue")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    names = [a.only] if a.only else list(CATALOGUES)
    results = {}
    for name in names:
        results[name] = run_one(name, out=out, n=a.n, dim=a.dim, seed=a.seed, epochs=a.epochs)
        r = results[name]
        m, s, i = (r["at_level"][k] for k in ("model", "mood_shift", "centroid_interp"))
        o = r["at_level"]["oracle_top1"]
        print(f"\n== {name}: trained in {r['train_seconds']} s, strength {r['default_strength']}")
        for level in (0.9, 0.95):
            key = level_key("genre_p@1", level)
            figures = ", ".join(
                f"{label} {_fmt(e[key])}"
                for label, e in (("model", m), ("shift", s), ("interp", i), ("oracle", o))
            )
            print(f"  Genre P@1 at Mood P@1 >= {level}: {figures}")
        print(f"  dominates shift: {r['dominates_mood_shift']['dominates']}, "
              f"interp: {r['dominates_centroid_interp']['dominates']}, "
              f"reaches Oracle Top-1 at 0.95: {r['reaches_oracle_top1_at_0.95']}")  # fmt: skip
    summary = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": a.threads, "cpu": platform.processor() or platform.machine()},
        "levels": list(LEVELS),
        "results": results,
    }  # fmt: skip
    write_text(out / "quality.json", json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {out / 'quality.json'}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    main()
