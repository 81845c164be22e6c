"""The end-to-end demo: render the built-in corpus, embed, train, evaluate.

``moodshift demo`` (the README's first command) runs every stage on the
built-in rendered corpus for each embedder, prints the paper-style table and
writes JSON, a Markdown summary and plots under ``--out``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from moodshift._atomic import write_text
from moodshift.audio.corpus import build_corpus
from moodshift.audio.embed import embed_catalog
from moodshift.evaluation.evaluate import evaluate_catalog, format_table
from moodshift.evaluation.sweep import run_sweep
from moodshift.training.train import TrainConfig, train

console = Console(stderr=False)


def _stage(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def run_demo(
    *,
    out: str | Path = "demo_out",
    n: int = 1000,
    embedders: Sequence[str] = ("musicnn", "features"),
    seed: int = 0,
    epochs: int | None = None,
    clip_seconds: tuple[float, float] = (10.0, 12.0),
    sweep: bool = True,
) -> dict[str, Any]:
    """Run corpus -> embed -> train -> evaluate and return the figures per embedder.

    Re-running reuses what exists: rendered clips are skipped and embeddings
    come from the content-hash cache, so a second run only trains and evaluates.

    Parameters
    ----------
    out : str or Path
        Folder of everything: ``corpus/``, ``cache/``, ``catalog_<embedder>/``,
        ``model_<embedder>/``, ``results*.json``, ``RESULTS.md``, ``plots_<embedder>/``.
    n : int
        Clips rendered.
    embedders : sequence of str
        Registered embedder names, each run in turn.
    seed : int
        Seed of the corpus, split, training and evaluation.
    epochs : int, optional
        Training epochs (default: :class:`TrainConfig`'s).
    clip_seconds : (float, float)
        Range of clip lengths.
    sweep : bool
        Add each method's trade-off curve.

    Returns
    -------
    dict
        ``n_clips``, ``timings`` (seconds per stage) and ``embedders`` (each an
        evaluation report as JSON).

    Raises
    ------
    DependencyError
        When fluidsynth, its soundfonts or an embedder's package is missing.
    DataError
        When the corpus is too small for a test split of more than 10 tracks.
    """

    out = Path(out)
    timings: dict[str, float] = {}
    t = _stage(f"1. corpus: {n} clips rendered with FluidSynth")
    labels = build_corpus(out / "corpus", n=n, seed=seed, clip_seconds=clip_seconds)
    timings["corpus_s"] = time.perf_counter() - t
    summary: dict[str, Any] = {"n_clips": n, "embedders": {}, "timings": timings}
    for name in embedders:
        t = _stage(f"2. embed with {name}")
        # One single-threaded worker process per core: faster than torch threads here.
        workers = max(1, min(os.cpu_count() or 1, 8))
        cat, failures = embed_catalog(labels=labels, embedder=name, cache_dir=out / "cache",
                                      seed=seed, workers=workers)  # fmt: skip
        cat.save(out / f"catalog_{name}")
        timings[f"embed_{name}_s"] = time.perf_counter() - t
        console.print(f"{len(cat)} tracks, {cat.dim}-d, {len(failures)} skipped")
        t = _stage(f"3. train on {name} embeddings")
        cfg = TrainConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
        model = train(cat, config=cfg, out=out / f"model_{name}")
        timings[f"train_{name}_s"] = time.perf_counter() - t
        t = _stage(f"4. evaluate ({name}) on the test split")
        report = evaluate_catalog(cat, model=model, seed=seed)
        # The query engine when only part of the catalogue (or none of it) is tagged.
        for frac in (0.2, 0.0):
            part = evaluate_catalog(cat, model=model, seed=seed, label_fraction=frac,
                                    methods=("query_default",))  # fmt: skip
            report.methods[f"query_default (F={frac:g})"] = part.methods["query_default"]
        report.catalog = str(out / f"catalog_{name}")
        report.model = str(out / f"model_{name}")
        if sweep:
            report.extras["sweep"] = run_sweep(cat, model=model, seed=seed)
        console.print(format_table(report))
        write_text(out / f"results_{name}.json", json.dumps(report.to_json(), indent=2))
        from moodshift.evaluation.plots import plot_report  # pulls in matplotlib: load on use

        plot_report(report, catalog=cat, model=model, out_dir=out / f"plots_{name}")
        timings[f"evaluate_{name}_s"] = time.perf_counter() - t
        summary["embedders"][name] = report.to_json()
    write_text(out / "results.json", json.dumps(summary, indent=2))
    write_text(out / "RESULTS.md", results_markdown(summary))
    console.rule("[bold]done")
    console.print(f"results: {out / 'RESULTS.md'}, plots: {out}/plots_*/")
    for k, v in timings.items():
        console.print(f"  {k:<24} {v:8.1f}")
    return summary


def results_markdown(summary: dict[str, Any]) -> str:
    """The demo's figures as Markdown tables (k = 1 and CF@10), one per embedder.

    Parameters
    ----------
    summary : dict
        A :func:`run_demo` result.

    Returns
    -------
    str
        Markdown text.
    """
    cols = ["mood_p@1", "genre_p@1", "inst_j@1", "cf@1", "cf@10"]
    lines = [f"# moodshift demo: {summary['n_clips']} rendered clips", ""]
    for name, res in summary["embedders"].items():
        lines += [f"## {name} ({res['n_queries']} test queries)", "",
                  "| method | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]  # fmt: skip
        for method, s in res["methods"].items():
            vals = " | ".join(f"{s[c]:.3f}" if c in s else "-" for c in cols)
            lines.append(f"| {method} | {vals} |")
        sweep = res.get("sweep")
        if sweep:
            lines += ["", "Best Genre P@1 at Mood P@1 >= 0.9 / 0.95 (sweep):", ""]
            for method, v in sweep.items():
                a, b = v.get("genre_p@1_at_mood_0.9"), v.get("genre_p@1_at_mood_0.95")
                fmt = lambda x: "never" if x is None else f"{x:.3f}"  # noqa: E731
                lines.append(f"- {method}: {fmt(a)} / {fmt(b)}")
        lines.append("")
    lines.append("Stage timings (s): " + ", ".join(
        f"{k} {v:.0f}" for k, v in summary["timings"].items()))  # fmt: skip
    return "\n".join(lines) + "\n"
