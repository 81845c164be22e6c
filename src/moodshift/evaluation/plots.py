"""Figures people would rather look at than read: metric bars, a 2-D map, sweep curves.

Every figure is drawn on a :class:`matplotlib.figure.Figure` of its own and
saved as PNG; nothing here touches pyplot's global state or selects a
backend, so importing this module changes nothing for a program that also
draws with matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from moodshift._atomic import atomic_file
from moodshift.evaluation.sweep import LEVELS, PRESERVATION_KEYS, level_key

if TYPE_CHECKING:
    from moodshift.data.catalog import Catalog
    from moodshift.evaluation.evaluate import Report
    from moodshift.model.network import MoodshiftModel


def _save(fig: Figure, path: Path) -> Path:
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    return path


def _subplots(ncols: int = 1, *, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize)
    return fig, np.atleast_1d(fig.subplots(1, ncols, squeeze=False)[0])


def plot_metric_bars(report: Report, path: str | Path) -> Path:
    """Grouped bars: one group per metric at k = 1 (and CF@10), one bar per method.

    Parameters
    ----------
    report : Report
        An :func:`moodshift.evaluation.evaluate.evaluate_catalog` result.
    path : str or Path
        PNG file to write (atomically).

    Returns
    -------
    Path
        ``path``.
    """
    methods = list(report.methods)
    first = report.methods[methods[0]]
    keys = [k for k in ("mood_p@1", "genre_p@1", "inst_j@1", "cf@1", "cf@10") if k in first]
    keys += [k for k in first if k.endswith("_p@1") and k not in keys and "any" not in k]
    fig, (ax,) = _subplots(figsize=(max(6, 1.6 * len(keys)), 4))
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
    pool : np.ndarray, shape (n, d)
        Unit-norm pool embeddings.
    pool_classes : np.ndarray of int, shape (n,)
        Class index of each pool row, into ``classes``.
    classes : list of str
        Class names (legend).
    seeds : np.ndarray of int, shape (q,)
        Pool rows of the seeds.
    queries : np.ndarray, shape (q, d)
        Transformed query vectors.
    retrieved : np.ndarray of int, shape (q,)
        Pool row of each query's top-1 result.
    path : str or Path
        PNG file to write (atomically).
    title : str
        Figure title (default: a legend of the markers).

    Returns
    -------
    Path
        ``path``.
    """
    mean = pool.mean(axis=0)
    _, _, vt = np.linalg.svd(pool - mean, full_matrices=False)
    proj = vt[:2].T
    p2, q2 = (pool - mean) @ proj, (queries - mean) @ proj
    cmap = matplotlib.colormaps["tab10"]
    fig, (ax,) = _subplots(figsize=(7, 6))
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


def plot_report(
    report: Report, *, catalog: Catalog, model: MoodshiftModel | None, out_dir: str | Path
) -> list[Path]:
    """Write the bar chart, the 2-D map (when a model is given) and the sweep plots.

    Parameters
    ----------
    report : Report
        An evaluation result; its ``extras["sweep"]`` (a
        :func:`moodshift.evaluation.sweep.run_sweep` result), when present, adds
        the sweep figures.
    catalog : Catalog
        The evaluated catalogue (the map projects ``report.part`` of it).
    model : MoodshiftModel or None
        The evaluated model; without one (or without a ``model`` result) no map is drawn.
    out_dir : str or Path
        Folder to write into (created when missing).

    Returns
    -------
    list of Path
        The written files: ``metrics.png``, then ``map.png``,
        ``sweep_frontier.png`` and ``sweep_summary.png`` where they apply.
    """
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
        written.extend(plot_sweep(report.extras["sweep"], out_dir=out))
    return written


# ---------------------------------------------------------------------- sweep
_STYLE = {
    "model": {"color": "C0", "marker": "o"},
    "mood_shift": {"color": "C1", "marker": "s"},
    "centroid_interp": {"color": "C2", "marker": "^"},
    "oracle_top1": {"color": "k", "marker": "*"},
    "oracle_rand100": {"color": "C7", "marker": "P"},
    "query_default": {"color": "C3", "marker": "D"},
    "tagger_filter": {"color": "C4", "marker": "v"},
    "probe_direction": {"color": "C5", "marker": "<"},
    "erasure_label": {"color": "C6", "marker": ">"},
    "leace_label": {"color": "C8", "marker": "h"},
    "erasure_tagger": {"color": "C6", "marker": "1"},
    "leace_tagger": {"color": "C8", "marker": "2"},
}


def _xy(curve: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(p["mood_p@1"], p.get(key)) for p in curve if p.get(key) is not None]
    if not pts:
        return np.array([]), np.array([])
    arr = np.asarray(pts, dtype=float)
    return arr[:, 0], arr[:, 1]


def plot_sweep(sweep: dict[str, Any], *, out_dir: str | Path) -> list[Path]:
    """Write ``sweep_frontier.png`` and ``sweep_summary.png`` into ``out_dir``.

    The frontier plot has Mood P@1 on x and Genre P@1 on y, one curve per
    method (oracles as single markers); a second panel shows Instrument J@1
    (solid) and CF@1 (dashed) where the sweep has them. The summary figure
    shows each method's best Genre P@1 (and Instrument J@1, CF@1) at Mood P@1
    >= 0.9 and >= 0.95; a missing bar means the method never reaches the level.

    Parameters
    ----------
    sweep : dict
        A :func:`moodshift.evaluation.sweep.run_sweep` result.
    out_dir : str or Path
        Folder to write into (created when missing).

    Returns
    -------
    list of Path
        The written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(sweep)
    has_second = any(
        p.get("inst_j@1") is not None or p.get("cf@1") is not None
        for m in methods
        for p in sweep[m]["curve"]
    )
    fig, axes = _subplots(2 if has_second else 1, figsize=(13 if has_second else 7, 5.2))
    for m in methods:
        style = _STYLE.get(m, {"marker": "x"})
        single = len(sweep[m]["curve"]) == 1
        x, y = _xy(sweep[m]["curve"], "genre_p@1")
        axes[0].plot(x, y, label=m, linestyle="none" if single else "-",
                     markersize=12 if single else 4, **style)  # fmt: skip
        if has_second:
            for key, ls in (("inst_j@1", "-"), ("cf@1", "--")):
                x2, y2 = _xy(sweep[m]["curve"], key)
                if x2.size:
                    axes[1].plot(x2, y2, linestyle="none" if single else ls,
                                 markersize=12 if single else 3, label=f"{m} {key}",
                                 **style)  # fmt: skip
    for level in LEVELS:
        for ax in axes:
            ax.axvline(level, color="0.6", linewidth=0.8, linestyle=":")
    axes[0].set_xlabel("Mood P@1 (target mood reached)")
    axes[0].set_ylabel("Genre P@1 (genre kept)")
    axes[0].set_title("mood / genre trade-off (up and right is better)")
    axes[0].legend(fontsize=8, loc="lower left")
    if has_second:
        axes[1].set_xlabel("Mood P@1")
        axes[1].set_ylabel("Instrument J@1 (solid), CF@1 (dashed)")
        axes[1].set_title("other preservation")
        axes[1].legend(fontsize=7, loc="lower left", ncol=2)
    for ax in axes:
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    written = [_save(fig, out / "sweep_frontier.png")]

    first = level_key("{}", LEVELS[0])
    metrics = [
        k
        for k in PRESERVATION_KEYS
        if any(sweep[m].get(first.format(k)) is not None for m in methods)
    ]
    metrics = metrics or ["genre_p@1"]
    fig, axes = _subplots(len(metrics), figsize=(4.6 * len(metrics), 4.2))
    width = 0.8 / len(LEVELS)
    for ax, metric in zip(axes, metrics, strict=True):
        for j, level in enumerate(LEVELS):
            vals = [sweep[m].get(level_key(metric, level)) for m in methods]
            heights = [np.nan if v is None else v for v in vals]
            pos = np.arange(len(methods)) + j * width
            ax.bar(pos, heights, width, label=f"Mood P@1 >= {level:g}")
            for p, v in zip(pos, vals, strict=True):
                ax.text(p, 0.01 if v is None else v + 0.01, "n/a" if v is None else f"{v:.2f}",
                        ha="center", fontsize=7, rotation=90 if v is None else 0)  # fmt: skip
        ax.set_xticks(np.arange(len(methods)) + width * (len(LEVELS) - 1) / 2, methods,
                      rotation=30, ha="right")  # fmt: skip
        ax.set_ylim(0, 1.1)
        ax.set_title(f"best {metric} at Mood P@1 >= level")
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "sweep_summary.png"))
    return written
