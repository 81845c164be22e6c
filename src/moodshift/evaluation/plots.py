"""Figures people would rather look at than read: metric bars, a 2-D map, sweep curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from moodshift._atomic import atomic_file


def _save(fig: Any, path: Path) -> Path:
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_metric_bars(report: Any, path: str | Path) -> Path:
    """Grouped bars: one group per metric at k = 1 (and CF@10), one bar per method."""
    methods = list(report.methods)
    first = report.methods[methods[0]]
    keys = [k for k in ("mood_p@1", "genre_p@1", "inst_j@1", "cf@1", "cf@10") if k in first]
    keys += [k for k in first if k.endswith("_p@1") and k not in keys and "any" not in k]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [report.methods[m].get(k, np.nan) for k in keys]
        ax.bar(np.arange(len(keys)) + i * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"{report.part} split, {report.n_queries} queries")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, Path(path))


def plot_map(
    *, pool: np.ndarray, pool_classes: np.ndarray, classes: list[str], seeds: np.ndarray,
    queries: np.ndarray, retrieved: np.ndarray, path: str | Path, title: str = "",
) -> Path:  # fmt: skip
    """PCA map of the pool, with seeds (o), transformed queries (*) and top-1 results (s).

    Parameters
    ----------
    pool : (n, d) unit-norm; pool_classes : (n,)
    seeds : (q,) pool rows; queries : (q, d); retrieved : (q,) pool rows
    """
    mean = pool.mean(axis=0)
    _, _, vt = np.linalg.svd(pool - mean, full_matrices=False)
    proj = vt[:2].T
    p2, q2 = (pool - mean) @ proj, (queries - mean) @ proj
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 6))
    for c, name in enumerate(classes):
        sel = pool_classes == c
        ax.scatter(p2[sel, 0], p2[sel, 1], s=8, alpha=0.25, color=cmap(c), label=name)
    for s, q, r in zip(seeds, q2, retrieved, strict=True):
        ax.annotate("", xy=q, xytext=p2[s], arrowprops={"arrowstyle": "->", "alpha": 0.5})
        ax.scatter(*p2[s], marker="o", s=40, color=cmap(pool_classes[s]), edgecolor="k")
        ax.scatter(*q, marker="*", s=90, color="k")
        ax.scatter(*p2[r], marker="s", s=40, color=cmap(pool_classes[r]), edgecolor="k")
    ax.set_title(title or "seeds (o) -> transformed queries (*) -> top-1 results (squares)")
    ax.legend(fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, Path(path))


def plot_report(report: Any, *, catalog: Any, model: Any, out_dir: str | Path) -> list[Path]:
    """Write the bar chart, the 2-D map (when a model is given) and sweep plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_metric_bars(report, out / "metrics.png")]
    if model is not None and "model" in report.results:
        pool = catalog.subset(catalog.split_indices(report.part))
        vocab, y = pool.classes(model.attribute, min_count=1)
        lookup = {c: i for i, c in enumerate(model.classes)}
        y = np.array([lookup[vocab[v]] for v in y])
        rng = np.random.default_rng(0)
        q = report.queries
        pick = rng.choice(len(q["seeds"]), size=min(25, len(q["seeds"])), replace=False)
        seeds = q["seeds"][pick]
        queries = model.transform(pool.normalized[seeds], source=q["source"][pick],
                                  target=q["target"][pick])  # fmt: skip
        written.append(plot_map(
            pool=pool.normalized, pool_classes=y, classes=model.classes, seeds=seeds,
            queries=queries, retrieved=report.results["model"][pick, 0], path=out / "map.png",
        ))  # fmt: skip
    if "sweep" in report.extras:
        from moodshift.evaluation.sweep import plot_sweep

        written.extend(plot_sweep(report.extras["sweep"], out_dir=out))
    return written
