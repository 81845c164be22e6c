"""Choose the training configuration on the validation split (``moodshift tune``).

Every candidate configuration of a grid is trained on the training split and
measured on the validation split; the test split is dropped from the
catalogue before anything else happens, so it can never influence the choice.

The selection rule (:data:`SELECTION_RULE`, stored with the winner in
``selection.json``):

1. Each configuration is trained once on the training split (with
   ``choose_strength`` off: the sweep below does that choice, once).
2. Its operating point on validation is chosen by
   :func:`moodshift.evaluation.sweep.operating_point` over the strengths of
   :data:`moodshift.evaluation.sweep.DEFAULT_STRENGTHS`
   (:data:`moodshift.evaluation.sweep.OPERATING_POINT_RULE` states it).
3. The winner is the configuration whose operating point has the highest
   tier, then the highest score in it (preservation in tier 2, ``primary``
   below), then the higher Mood P@1, then the shorter training.
4. The winner's operating strength is stored in the model's configuration as
   ``default_strength`` (used by :meth:`MoodshiftModel.transform` when no
   strength is given).

Completed rows (and the current leader's weights) are cached in
``<out>.tune/``, so a rerun skips them; a time budget stops new configurations
from starting once it is spent.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from moodshift._atomic import atomic_dir, resolve_dir, write_text
from moodshift.data.catalog import Catalog
from moodshift.errors import DataError, TuneError
from moodshift.evaluation.baselines import training_centroids
from moodshift.evaluation.evaluate import RetrievalEvaluator
from moodshift.evaluation.sweep import (
    DEFAULT_STRENGTHS,
    OPERATING_POINT_RULE,
    POINT_KEYS,
    best_at_level,
    collapse_bounds,
    operating_point,
    strength_curve,
)
from moodshift.model.network import MoodshiftModel
from moodshift.training.train import ARCH_FIELDS, TrainConfig, train

log = logging.getLogger(__name__)

#: The whole rule, stored with the winner in ``selection.json``.
SELECTION_RULE = (
    "Train every configuration on the training split; the test split is removed first and "
    f"never read. {OPERATING_POINT_RULE} Winner: highest tier, then highest score "
    "(preservation in tier 2, primary below), then higher mood_p@1, then shorter training. "
    "The winner's strength is stored as default_strength."
)

#: The paper's network and optimiser as docs/method.md describes them (for the grid's
#: paper-like rows; the batch stays at the default so every row takes as many steps).
PAPER_NET: dict[str, Any] = {
    "residual": False, "head_hidden": 0, "centroid_shift": False, "extrapolation": 1.0,
    "lr": 5e-4,
}  # fmt: skip

#: The default search: the paper's objective and its variants (loss mix, margin
#: fixed or relative, BCE on target or seed), K absolute or relative to the class
#: size, and the architecture extensions. Each entry is a name plus TrainConfig
#: overrides; unnamed settings keep TrainConfig's defaults. The first entry is
#: the default configuration so that a tiny budget still trains it.
DEFAULT_GRID: tuple[dict[str, Any], ...] = (
    {"name": "default"},
    {"name": "paper", "losses": ("cos", "triplet", "cosbce"), "margin": 0.3,
     "relative_margin": False, "bce_on": "target", "k": 100, **PAPER_NET},
    {"name": "paper_bce_seed", "losses": ("cos", "triplet", "cosbce"), "margin": 0.3,
     "relative_margin": False, "bce_on": "seed", "k": 100, **PAPER_NET},
    {"name": "paper_cos_triplet", "losses": ("cos", "triplet"), "margin": 0.3,
     "relative_margin": False, "k": 100, **PAPER_NET},
    {"name": "paper_cos", "losses": ("cos",), "k": 100, **PAPER_NET},
    {"name": "paper_cos_triplet_rel", "losses": ("cos", "triplet"), "margin": 0.5,
     "relative_margin": True, "k": 100, **PAPER_NET},
    {"name": "paper_cos_k1", "losses": ("cos",), "k": 1, **PAPER_NET},
    {"name": "residual_k1", "losses": ("cos",), "k": 1, "residual": True,
     "centroid_shift": False, "extrapolation": 1.0},
    {"name": "residual_k1_x2", "losses": ("cos",), "k": 1, "residual": True,
     "centroid_shift": False, "extrapolation": 2.0},
    {"name": "shift_k1_x1", "extrapolation": 1.0},
    {"name": "shift_kfrac", "k_fraction": 0.025},
    {"name": "shift_triplet_rel", "losses": ("cos", "triplet"), "margin": 1.0,
     "relative_margin": True},
    {"name": "shift_x2", "extrapolation": 2.0},
    {"name": "shift_lr1e-3", "lr": 1e-3},
    {"name": "shift_lr2e-3", "lr": 2e-3},
    {"name": "shift_triplet_rel_lr2e-3", "losses": ("cos", "triplet"), "margin": 1.0,
     "relative_margin": True, "lr": 2e-3},
)  # fmt: skip


def config_key(config: TrainConfig) -> str:
    """A short, stable hash of a configuration (the cache key of its row).

    Parameters
    ----------
    config : TrainConfig

    Returns
    -------
    str
        16 hex digits of the SHA-256 of the configuration's sorted JSON.
    """
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def without_test(catalog: Catalog) -> Catalog:
    """The catalogue minus its test split: what tuning is allowed to see.

    Parameters
    ----------
    catalog : Catalog
        With a stored split.

    Returns
    -------
    Catalog
        Its train and validation tracks.

    Raises
    ------
    DataError
        When the catalogue has no split, or no validation track.
    """
    split = catalog.split
    if split is None:
        raise DataError("the catalogue has no split; run `moodshift import` again to store one.")
    keep = np.flatnonzero(split != "test")
    if not (split[keep] == "val").any():
        raise DataError(
            "the catalogue has no validation split, which tuning needs; re-import it with "
            "more tracks per mood (10 % of each mood goes to validation)."
        )
    return catalog.subset(keep)


def _rank_key(row: dict[str, Any]) -> tuple[float, ...]:
    return (row["tier"], row["score"], row["val_mood_p@1"], -row["train_seconds"])


def select(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The winning row: highest tier, then score, then Mood P@1, then shorter training.

    Parameters
    ----------
    rows : sequence of dict
        Table rows; only those with ``status == "done"`` compete.

    Returns
    -------
    dict
        The winning row.

    Raises
    ------
    TuneError
        When no row is done.
    """
    done = [r for r in rows if r.get("status") == "done"]
    if not done:
        raise TuneError("no configuration finished; raise --budget.")
    return max(done, key=_rank_key)


def _evaluate(
    model: MoodshiftModel,
    ev: RetrievalEvaluator,
    *,
    mood_target: float,
    bounds: tuple[float, float],
) -> dict[str, Any]:
    curve = strength_curve(ev, model, strengths=DEFAULT_STRENGTHS)
    point, tier = operating_point(curve, mood_target=mood_target, bounds=bounds)
    full = curve[-1]
    out: dict[str, Any] = {
        "feasible": tier == 2,
        "tier": tier,
        "score": point["score"],
        "kept": point["kept"],
        "strength": float(point["param"]),
        "val_mood_p@1": point["mood_p@1"],
        "val_genre_p@1": point.get("genre_p@1"),
        "val_inst_j@1": point.get("inst_j@1"),
        "val_cf@1": point.get("cf@1"),
        "val_preservation": point["preservation"],
        "val_mood_p@1_s1": full["mood_p@1"],
        "val_genre_p@1_s1": full.get("genre_p@1"),
        "val_inst_j@1_s1": full.get("inst_j@1"),
        f"val_genre_p@1_at_mood_{mood_target:g}": best_at_level(curve, level=mood_target),
        "val_curve": [{k: p.get(k) for k in ("param", *POINT_KEYS, "preservation")} for p in curve],
    }
    return out


TABLE_COLUMNS = (
    "name", "status", "feasible", "tier", "kept", "strength", "val_mood_p@1", "val_genre_p@1",
    "val_inst_j@1", "val_cf@1", "val_preservation", "val_mood_p@1_s1", "val_genre_p@1_s1",
    "train_seconds", "best_epoch", "k", "losses", "loss_weights", "margin", "relative_margin",
    "bce_on", "k_fraction", "residual", "head_hidden", "centroid_shift", "extrapolation",
    "epochs", "lr",
)  # fmt: skip


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r.get(k)) for k in TABLE_COLUMNS})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 4)
    if isinstance(value, list | tuple):
        return "+".join(map(str, value))
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else value


def print_table(rows: Sequence[dict[str, Any]], *, winner: str | None = None) -> None:
    """The ablation table on the terminal (rich).

    Parameters
    ----------
    rows : sequence of dict
        Table rows (:data:`TABLE_COLUMNS` and more).
    winner : str, optional
        Name of the row to highlight.
    """

    table = Table(title=f"moodshift tune: validation split ({len(rows)} configurations)")
    # (header, row key): short headers so the table fits a terminal.
    cols = (
        ("config", "name"), ("losses", "losses"), ("K", "k"), ("s", "strength"),
        ("mood", "val_mood_p@1"), ("genre", "val_genre_p@1"), ("inst", "val_inst_j@1"),
        ("cf", "val_cf@1"), ("mood s=1", "val_mood_p@1_s1"), ("genre s=1", "val_genre_p@1_s1"),
        ("tier", "tier"), ("secs", "train_seconds"), ("status", "status"),
    )  # fmt: skip
    for header, key in cols:
        table.add_column(header, justify="left" if key in ("name", "losses") else "right")
    for r in rows:
        cells = []
        for _, key in cols:
            v = _cell(r.get(key))
            digits = {"strength": 2, "train_seconds": 1}.get(key, 3)
            cells.append(f"{v:.{digits}f}" if isinstance(v, float) else str(v))
        table.add_row(*cells, style="bold green" if r.get("name") == winner else None)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file has no width; do not wrap at 80
    console.print(table)
    console.print(
        "mood/genre/inst/cf: validation figures at strength s (the operating point); "
        "tier 2: mood >= target without collapse, 1: below target, 0: collapsed."
    )


def tune(
    *,
    catalog: Catalog,
    out: str | Path,
    budget_s: float = 1800.0,
    epochs: int | None = None,
    mood_target: float = 0.9,
    seed: int = 0,
    resume: bool = True,
    grid: Sequence[dict[str, Any]] | None = None,
    base: TrainConfig | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> MoodshiftModel:
    """Train every configuration of ``grid``, choose one on validation, save it at ``out``.

    Parameters
    ----------
    catalog : Catalog
        With a train/val/test split; the test part is dropped before anything runs.
    out : path
        Model folder of the winner. It also receives ``tuning.json`` and
        ``tuning.csv`` (the ablation table) and ``selection.json`` (rule, table,
        winner). Completed rows are cached in ``<out>.tune/``.
    budget_s : float
        Seconds of this call after which no new configuration starts (the one
        running finishes; at least one configuration always runs).
    epochs : int, optional
        Overrides every configuration's epochs (default: each one's own).
    mood_target : float
        Validation Mood P@1 a configuration must reach (see the module docstring).
    seed : int
        Training seed of every configuration.
    resume : bool
        Reuse cached rows from ``<out>.tune/``; False starts afresh.
    grid : sequence of dict, optional
        Configurations: ``{"name": str, **TrainConfig overrides}``; default
        :data:`DEFAULT_GRID`.
    base : TrainConfig, optional
        Settings shared by every configuration before its overrides (device,
        ``val_max_seeds``, ...); default ``TrainConfig()``.

    progress, verbose : bool
        Progress bars; the table and the winner printed at the end.

    Returns
    -------
    MoodshiftModel
        The winner, with ``default_strength`` and ``selection`` set.

    Raises
    ------
    TuneError
        When ``mood_target`` is outside (0, 1], the grid is empty, has a
        duplicate name or an unknown option, or no configuration finished.
    DataError
        When the catalogue has no split or no validation part.
    """
    if not 0 < mood_target <= 1:
        raise TuneError(f"mood_target must lie in (0, 1], got {mood_target}.")
    out = Path(out)
    cache = out.with_name(out.name + ".tune")
    if not resume and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    dev = without_test(catalog)
    entries = list(grid if grid is not None else DEFAULT_GRID)
    configs = _configs(entries, base=base, epochs=epochs, seed=seed, mood_target=mood_target)
    classes, _ = dev.subset(dev.split_indices("train")).classes(configs[0][1].attribute)
    ev = RetrievalEvaluator(
        dev.subset(dev.split_indices("val")), attribute=configs[0][1].attribute,
        classes=classes, ks=(1,), max_seeds=configs[0][1].val_max_seeds,
        mood_target=mood_target, seed=seed,
    )  # fmt: skip
    centroids = training_centroids(dev, attribute=ev.attribute, classes=ev.classes)
    bounds = collapse_bounds(ev, centroids=centroids)
    t_start = time.monotonic()
    rows: list[dict[str, Any]] = []
    leader_path = cache / "leader"
    leader = _read_json(cache / "leader.json")
    if leader is not None and leader.get("key") not in {config_key(c) for _, c, _ in configs}:
        leader = None  # cached from another grid: it may not compete here
    for i, (name, cfg, overrides) in enumerate(configs):
        key = config_key(cfg)
        row_path = cache / f"row-{key}.json"
        cached = _read_json(row_path) if resume else None
        if cached is not None and cached.get("status") == "done":
            rows.append(cached | {"name": name})
            continue
        spent = time.monotonic() - t_start
        ran = any(r.get("ran_now") for r in rows)
        if spent >= budget_s and (ran or any(r.get("status") == "done" for r in rows)):
            rows.append(_row_base(name, key, cfg, overrides) | {"status": "skipped (budget)"})
            continue
        if verbose:
            print(f"[{i + 1}/{len(configs)}] training {name} ({key})", flush=True)
        run_dir = cache / f"run-{key}"
        t0 = time.perf_counter()
        model = train(dev, config=cfg, out=run_dir, resume=resume, progress=progress)
        seconds = time.perf_counter() - t0
        figures = _evaluate(model, ev, mood_target=mood_target, bounds=bounds)
        row = _row_base(name, key, cfg, overrides) | figures | {
            "status": "done",
            "train_seconds": round(seconds, 2),
            "best_epoch": model.config.get("training", {}).get("best_epoch"),
            "k": model.config.get("training", {}).get("k"),
        }  # fmt: skip
        write_text(row_path, json.dumps(row, indent=2, default=str))
        rows.append(row | {"ran_now": True})
        if leader is None or _rank_key(row) > _rank_key(leader):
            model.config["default_strength"] = row["strength"]
            model.save(leader_path)
            leader = row
            write_text(cache / "leader.json", json.dumps(row, indent=2, default=str))
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(Path(f"{run_dir}.ckpt"), ignore_errors=True)
    for r in rows:
        r.pop("ran_now", None)
    winner = select(rows)
    if leader is None or leader["key"] != winner["key"] or not resolve_dir(leader_path).exists():
        # The cache lost the leader's weights (or the grid changed): retrain the winner.
        cfg = next(c for _, c, _ in configs if config_key(c) == winner["key"])
        model = train(dev, config=cfg, progress=progress)
        model.config["default_strength"] = winner["strength"]
    else:
        model = MoodshiftModel.load(leader_path)
    table = [{k: v for k, v in r.items() if k != "val_curve"} for r in rows]
    selection = {
        "rule": SELECTION_RULE,
        "split": "val",
        "mood_target": mood_target,
        "winner": winner["name"],
        "winner_key": winner["key"],
        "winner_config": winner["config"],
        "default_strength": winner["strength"],
        "winner_validation": {k: v for k, v in winner.items() if k.startswith("val_")},
        "collapse_bounds": {"collapse": bounds[0], "seed": bounds[1]},
        "table": table,
        "budget_s": budget_s,
        "seconds": round(time.monotonic() - t_start, 2),
    }
    model.selection = selection
    model.config["default_strength"] = winner["strength"]
    tuning = {"selection": {k: v for k, v in selection.items() if k != "table"}, "rows": rows}
    with atomic_dir(out) as tmp:
        model.write_into(tmp)
        (tmp / "tuning.json").write_text(json.dumps(tuning, indent=2, default=str))
        (tmp / "tuning.csv").write_text(_csv(rows))
    if verbose:
        print_table(rows, winner=winner["name"])
        print(f"winner: {winner['name']} at strength {winner['strength']:g}; saved {out}")
    return model


def _configs(
    entries: Sequence[dict[str, Any]],
    *,
    base: TrainConfig | None,
    epochs: int | None,
    seed: int,
    mood_target: float,
) -> list[tuple[str, TrainConfig, dict[str, Any]]]:
    if not entries:
        raise TuneError("the grid is empty; give at least one configuration.")
    base_dict = (base or TrainConfig()).to_dict()
    out = []
    names = set()
    for i, entry in enumerate(entries):
        overrides = {k: v for k, v in entry.items() if k != "name"}
        name = str(entry.get("name", f"config{i}"))
        if name in names:
            raise TuneError(f"grid names must be unique; {name!r} appears twice.")
        names.add(name)
        # The strength is chosen here, on the same validation sweep, so train() skips its own.
        params = base_dict | overrides | {
            "seed": seed, "mood_target": mood_target, "choose_strength": False,
        }  # fmt: skip
        if epochs is not None:
            params["epochs"] = epochs
        try:
            cfg = TrainConfig.from_dict(params)
        except TypeError as exc:
            raise TuneError(f"grid entry {name!r} is not a valid TrainConfig ({exc}).") from exc
        unknown = set(overrides) - set(base_dict) - set(ARCH_FIELDS)
        if unknown:
            raise TuneError(f"grid entry {name!r} sets unknown options {sorted(unknown)}.")
        out.append((name, cfg, overrides))
    return out


def _row_base(name: str, key: str, cfg: TrainConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    d = cfg.to_dict()
    d_flat = d | d["architecture"]
    return {
        "name": name,
        "key": key,
        "overrides": overrides,
        "config": d,
        **{k: d_flat[k] for k in ("losses", "loss_weights", "margin", "relative_margin", "bce_on",
                             "k_fraction", "residual", "head_hidden", "centroid_shift",
                             "extrapolation", "epochs", "lr")},
    }  # fmt: skip


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
